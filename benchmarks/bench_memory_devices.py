"""Peak memory of Monte Carlo solves against the estimate `solve_dmft` reports before solving,
and a Monte Carlo solve on 1 against 4 (host) devices.

- ``memory``: three sizes, each solved in a fresh process (ReLU, float32, 2 replicas). A first
  call compiles; then the peak resident set is reset (``/proc/self/clear_refs``), and the peak
  of the second call minus the resident set before it is what the solve added, compared with
  ``Solution.memory_estimate`` (one replica's arrays: replicas run one after another).
  Memory the allocator kept from the first call and reuses is not counted.
- ``devices``: the same solve with ``devices=1`` and with 4 host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=4``), wall times of the second call and
  the largest relative difference of loss and NTK. On a CPU the 4 "devices" share the same
  cores, so this checks the sharded program, not a speed-up.

    python benchmarks/bench_memory_devices.py [--small] [--out results/memory_devices.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _results import write_json  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import numpy as np, jax, dmft
P, L, T, S, devices = (int(v) for v in sys.argv[1:6])
X = np.random.default_rng(0).normal(size=(P, 5))
y = np.sign(np.random.default_rng(1).normal(size=P))
kw = dict(depth=L, activation="relu", eta0=0.3, steps=T, samples=S, replicas=2, throw=False,
          dtype="float32", devices=devices)
def rss():  # current resident set, bytes
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()
def hwm():  # peak resident set since the last reset, bytes
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM"))
jax.block_until_ready(jax.numpy.ones(8) * 2)
dmft.solve_dmft(X, y, **kw)  # compiles; its arrays are freed on return
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (Linux >= 4.0)
before = rss()
t = time.perf_counter()
sol = dmft.solve_dmft(X, y, **kw)
jax.block_until_ready(sol.loss)
wall = time.perf_counter() - t
peak = hwm()
print(json.dumps(dict(P=P, L=L, T=T, S=S, devices=jax.device_count(), wall_s=wall,
    estimate=int(sol.memory_estimate), added=peak - before, before=before, peak=peak,
    loss=np.asarray(sol.loss).tolist(), ntk=np.asarray(sol.ntk).ravel().tolist())))
"""


def child(P, L, T, S, devices=1, host_devices=1):
    env = dict(os.environ)
    if host_devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *(str(v) for v in (P, L, T, S, devices))],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.small:
        sizes = [(2, 2, 4, 1024), (4, 2, 8, 2048), (4, 4, 8, 4096)]
        shard = (4, 2, 6, 2048)
    else:
        sizes = [(4, 4, 20, 8192), (8, 8, 30, 8192), (8, 16, 40, 8192)]
        shard = (8, 8, 20, 8192)
    memory = []
    for P, L, T, S in sizes:
        r = child(P, L, T, S)
        ratio = r["added"] / r["estimate"]
        memory.append({k: r[k] for k in ("P", "L", "T", "S", "estimate", "added", "wall_s")})
        memory[-1]["ratio"] = ratio
        print(
            f"P={P} L={L} T={T} S={S}: estimate {r['estimate'] / 2**20:.0f} MiB, added "
            f"{r['added'] / 2**20:.0f} MiB (peak − start), ratio {ratio:.2f}, {r['wall_s']:.1f} s",
            flush=True,
        )
    one = child(*shard, devices=1, host_devices=4)
    four = child(*shard, devices=4, host_devices=4)

    def rel(a, b):
        import numpy as np

        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    devices = dict(
        size=dict(zip("PLTS", shard, strict=True)),
        wall_1=one["wall_s"],
        wall_4=four["wall_s"],
        loss_rel=rel(four["loss"], one["loss"]),
        ntk_rel=rel(four["ntk"], one["ntk"]),
    )
    print(
        f"devices: 1 → {one['wall_s']:.1f} s, 4 host devices → {four['wall_s']:.1f} s; "
        f"max rel. difference loss {devices['loss_rel']:.1e}, NTK {devices['ntk_rel']:.1e}"
    )
    if args.out:
        write_json(args.out, dict(memory=memory, devices=devices))
    worst = max(abs(m["ratio"] - 1) for m in memory)
    print(f"largest |peak/estimate − 1| = {worst:.2f}")


if __name__ == "__main__":
    main()
