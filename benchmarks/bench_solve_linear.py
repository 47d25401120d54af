"""Wall time of the exact linear DMFT solver (compile, then a second call that reuses it).

python benchmarks/bench_solve_linear.py [--small] [--out benchmarks/results/solve_linear.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import dmft  # noqa: E402


def bench(depth, steps, points, dtype):
    rng = np.random.default_rng(0)
    X = np.ones((1, 1)) if points == 1 else rng.normal(size=(points, 8))
    y = np.ones(points)
    kw = dict(depth=depth, activation="linear", eta0=0.02, steps=steps, dtype=dtype)
    t = time.perf_counter()
    jax.block_until_ready(dmft.solve_dmft(X, y, gamma0=1.0, **kw).loss)
    first = time.perf_counter() - t
    t = time.perf_counter()
    sol = dmft.solve_dmft(X, y, gamma0=0.9, **kw)
    jax.block_until_ready(sol.loss)
    second = time.perf_counter() - t
    return dict(
        depth=depth,
        steps=steps,
        points=points,
        dtype=dtype,
        first_s=first,
        second_s=second,
        memory_estimate_mib=sol.memory_estimate / 2**20,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    cases = [(4, 10, 1)] if args.small else [(16, 50, 1), (64, 100, 1), (8, 50, 8)]
    rows = [bench(L, T, P, dt) for L, T, P in cases for dt in ("float32", "float64")]
    report = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "load_avg": os.getloadavg(),
        "cases": rows,
    }
    for r in rows:
        print(
            f"L={r['depth']:3d} T={r['steps']:4d} P={r['points']:2d} {r['dtype']}: "
            f"first {r['first_s']:.2f}s, second {r['second_s']:.2f}s, "
            f"memory estimate {r['memory_estimate_mib']:.0f} MiB"
        )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)))
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=2)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
