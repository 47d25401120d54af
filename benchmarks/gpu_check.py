"""One short accelerator check: timings of the simulator and the exact linear solver, with
correctness checks against closed forms. Writes JSON to the path given (default stdout only).

    python benchmarks/gpu_check.py [out.json]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import dmft  # noqa: E402
from dmft.lazy import lazy_kernels, linear_one_point_ntk  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t


def main(out_path=None):
    report = {"device": str(jax.devices()[0]), "jax": jax.__version__}
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 16)), np.sign(rng.normal(size=16))
    kw = dict(width=1024, depth=8, steps=100, seeds=16, activation="relu", dtype="float32")
    _, first = timed(lambda: dmft.simulate(X, y, eta0=0.05, **kw).loss)
    _, second = timed(lambda: dmft.simulate(X, y, eta0=0.04, **kw).loss)
    report["simulate_N1024_L8_P16_T100_S16"] = {"first_s": first, "second_s": second}

    # correctness: ensemble-mean NTK at init against the arc-cosine recursion
    Xs = X[:4]
    res = dmft.simulate(Xs, y[:4], width=256, depth=4, steps=0, seeds=64, dtype="float64")
    z = (res.mean("ntk")[0] - lazy_kernels(Xs, depth=4, activation="relu").ntk) / res.stderr("ntk")[
        0
    ]
    report["init_ntk_max_abs_z"] = float(np.abs(z).max())

    one = (np.ones((1, 1)), np.ones(1))
    sol = dmft.solve_dmft(*one, depth=4, activation="linear", gamma0=1e-4, eta0=0.05, steps=10)
    report["lazy_linear_ntk_rel_err"] = float(abs(sol.ntk[0, 0, 0] / linear_one_point_ntk(4) - 1))
    for dt in ("float32", "float64"):
        lin = dict(depth=64, activation="linear", eta0=0.02, steps=100, dtype=dt)
        _, first = timed(lambda: dmft.solve_dmft(*one, gamma0=1.0, **lin).loss)  # noqa: B023
        s, second = timed(lambda: dmft.solve_dmft(*one, gamma0=0.9, **lin).loss)  # noqa: B023
        report[f"linear_L64_T100_{dt}"] = {
            "first_s": first,
            "second_s": second,
            "final_loss": float(s[-1]),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if out_path:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out_path)))
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, out_path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
