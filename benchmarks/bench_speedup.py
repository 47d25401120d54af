"""Speed of `solve_dmft` against its first working version, side by side on this machine.

The baseline is the commit that first solved the Monte Carlo DMFT (``f323590``, which also holds
the first exact linear path). Its ``dmft`` package is unpacked with ``git archive`` into a
temporary folder, and every solve runs in a fresh process with either that package or the
working tree's first on ``sys.path``. For each size the two versions run one after the other
(baseline, current, baseline, current when ``--repeat 2``), so load on the machine hits both
alike. Each process solves twice with the same settings: the first call compiles, the second
reuses the compiled program; both wall times are recorded, and the ratio reported is
baseline / current of the second call (steady state) and of the first (what a user waits for
once).

Also recorded: the final loss of both versions and their difference relative to the Monte Carlo
error (both versions draw their sources differently, so they agree only within that error),
and, for the linear path, the float64 difference (deterministic: should be at rounding).

    python benchmarks/bench_speedup.py [--small] [--baseline COMMIT] [--out results/speedup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _results import write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "f323590"

CHILD = r"""
import json, sys, time
import numpy as np, jax
import dmft
act, P, L, T, S, R, dtype = sys.argv[1], *(int(v) for v in sys.argv[2:7]), sys.argv[7]
jax.config.update("jax_enable_x64", dtype == "float64")
X = np.random.default_rng(0).normal(size=(P, 5))
y = np.sign(np.random.default_rng(1).normal(size=P))
kw = dict(depth=L, activation=act, eta0=0.3, steps=T, throw=False, dtype=dtype)
if act != "linear":
    kw.update(samples=S, replicas=R)
walls = []
for _ in range(2):
    t = time.perf_counter()
    sol = dmft.solve_dmft(X, y, **kw)
    jax.block_until_ready(sol.loss)
    walls.append(time.perf_counter() - t)
err = sol.loss_error if act != "linear" else None
print(json.dumps(dict(first_s=walls[0], second_s=walls[1], loss=np.asarray(sol.loss).tolist(),
    mc_error=None if err is None else np.asarray(err).tolist(), file=dmft.__file__)))
"""


def run(path, case):
    env = dict(os.environ, PYTHONPATH=path)
    args = [str(v) for v in (case["activation"], *case["size"], case["dtype"])]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, cwd=path
    )
    if out.returncode:
        raise RuntimeError(f"{path}: {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def unpack(commit, into):
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", commit, "dmft"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--baseline", default=BASELINE, help="commit of the first version")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per version")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", choices=("relu", "linear"), help="run one activation's cases")
    args = parser.parse_args()
    # (activation, (P, L, T, S, replicas), dtype); S and replicas are unused on the linear path
    if args.small:
        cases = [("relu", (2, 2, 6, 1024, 2), "float32"), ("linear", (1, 4, 10, 0, 0), "float64")]
    else:
        cases = [
            ("relu", (4, 4, 20, 8192, 2), "float32"),
            ("relu", (8, 8, 30, 8192, 2), "float32"),
            ("relu", (8, 8, 50, 16384, 2), "float32"),
            ("linear", (1, 16, 50, 0, 0), "float64"),
            ("linear", (1, 32, 100, 0, 0), "float64"),
            ("linear", (8, 8, 50, 0, 0), "float64"),
            ("linear", (1, 64, 100, 0, 0), "float32"),  # issue #3's size for the exact path
        ]
    cases = [c for c in cases if args.only in (None, c[0])]
    have = subprocess.run(
        ["git", "-C", ROOT, "cat-file", "-e", f"{args.baseline}^{{commit}}"], capture_output=True
    )
    if have.returncode:  # e.g. a shallow clone
        print(f"baseline commit {args.baseline} is not in this clone: nothing to compare")
        if args.out:
            write_json(args.out, dict(baseline=args.baseline, skipped="commit not available"))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = unpack(args.baseline, tmp)
        for act, size, dtype in cases:
            case = dict(activation=act, size=size, dtype=dtype)
            runs = {"baseline": [], "current": []}
            for _ in range(args.repeat):
                runs["baseline"].append(run(old, case))
                runs["current"].append(run(ROOT, case))
            best = {k: min(v, key=lambda r: r["second_s"]) for k, v in runs.items()}
            b, c = best["baseline"], best["current"]
            diff = max(abs(p - q) for p, q in zip(b["loss"], c["loss"], strict=True))
            err = c["mc_error"]
            row = dict(
                case,
                baseline_first_s=min(r["first_s"] for r in runs["baseline"]),
                current_first_s=min(r["first_s"] for r in runs["current"]),
                baseline_second_s=b["second_s"],
                current_second_s=c["second_s"],
                speedup_second=b["second_s"] / c["second_s"],
                speedup_first=min(r["first_s"] for r in runs["baseline"])
                / min(r["first_s"] for r in runs["current"]),
                loss_final=c["loss"][-1],
                loss_max_abs_diff=diff,
                loss_final_diff_over_mc_error=None
                if not err
                else abs(b["loss"][-1] - c["loss"][-1]) / max(err[-1], 1e-300),
            )
            rows.append(row)
            print(
                f"{act:6s} P,L,T,S,R={size} {dtype}: second call {b['second_s']:.2f} s -> "
                f"{c['second_s']:.2f} s ({row['speedup_second']:.2f}x); first call "
                f"{row['baseline_first_s']:.1f} s -> {row['current_first_s']:.1f} s "
                f"({row['speedup_first']:.2f}x); loss diff {diff:.2e}",
                flush=True,
            )
    report = dict(
        baseline=args.baseline,
        current=subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        load_average=os.getloadavg(),
        cases=rows,
    )
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
