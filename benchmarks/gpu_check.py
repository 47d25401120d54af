"""One short accelerator check: timings of the simulator, the exact linear solver and the Monte
Carlo solver, with correctness checks against closed forms. Writes JSON to the path given.

    python benchmarks/gpu_check.py [out.json] [--small]     (--small: tiny sizes, any device)
    python benchmarks/gpu_check.py --large-only benchmarks/data/gpu_sizes_cpu.json   (on the CPU)

The large sizes (issue #8, point 5: ReLU at P = 16, L = 32, 100 steps and the exact linear path at
L = 128) run last; on an accelerator the script sets their second-call times against the same
solves on the 2-core CPU, stored in ``data/gpu_sizes_cpu.json`` by the second command, and
checks that the losses agree (same seed, so the same random draws on every backend).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import dmft  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _results import write_json  # noqa: E402

from dmft.lazy import lazy_errors, lazy_kernels, linear_one_point_ntk  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t


def peak_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def monte_carlo(report, small):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 16))
    y = np.sign(X[:, 0] + 0.5 * X[:, 1])
    # correctness: lazy ReLU against the closed-form NTK dynamics, in Monte Carlo errors
    kw = dict(depth=4, activation="relu", gamma0=1e-4, eta0=0.5, steps=10, samples=8192)
    sol = dmft.solve_dmft(X, y, throw=False, **kw)
    K = lazy_kernels(X, depth=4, activation="relu").ntk
    ref = 0.5 * np.mean(lazy_errors(K, y, eta0=0.5, steps=10) ** 2, axis=1)
    z = (np.asarray(sol.loss) - ref)[1:] / np.asarray(sol.loss_error)[1:]
    report["mc_lazy_relu_max_abs_z"] = float(np.abs(z).max())
    # timing: ReLU, P = 8, L = 8, T = 50 (issue #3, 7a)
    L, T, S = (2, 5, 1024) if small else (8, 50, 16384)
    kw = dict(depth=L, activation="relu", eta0=0.1, steps=T, samples=S, dtype="float32")
    _, first = timed(lambda: dmft.solve_dmft(X, y, gamma0=1.0, throw=False, **kw).loss)
    s, second = timed(lambda: dmft.solve_dmft(X, y, gamma0=0.9, throw=False, **kw))
    report[f"mc_relu_P8_L{L}_T{T}_S{S}_R4_float32"] = {
        "first_s": first,
        "second_s": second,
        "max_rel_error": float(np.max(np.asarray(s.loss_error)[1:] / np.asarray(s.loss)[1:])),
    }
    # memory: ReLU, P = 16, L = 16, T = 100 (issue #3, 7c)
    L, T, P = (2, 5, 4) if small else (16, 100, 16)
    Xb = rng.normal(size=(P, 16))
    yb = np.sign(Xb[:, 0])
    kw = dict(depth=L, activation="relu", eta0=0.1, steps=T, replicas=2, dtype="float32")
    s, first = timed(lambda: dmft.solve_dmft(Xb, yb, samples=4096, throw=False, **kw))
    report[f"mc_relu_P{P}_L{L}_T{T}_S4096_R2_float32"] = {
        "first_s": first,
        "memory_estimate_gib": s.memory_estimate / 2**30,
        "device_peak_gib": (peak_bytes() or 0) / 2**30,
        "final_loss": float(s.loss[-1]),
    }


CPU_REFERENCE = os.path.join(os.path.dirname(__file__), "data", "gpu_sizes_cpu.json")


def large_sizes(report, small, save):
    """ReLU P = 16, L = 32, T = 100 (4096 sites × 2 replicas, float32) and the exact linear path
    at P = 1, L = 128, T = 100 (float32 and float64); with ratios to the CPU reference if any."""
    rng = np.random.default_rng(2)
    L, T, P = (2, 6, 4) if small else (32, 100, 16)  # (small: not the keys of monte_carlo's)
    X = rng.normal(size=(P, 16))
    y = np.sign(X[:, 0])
    kw = dict(depth=L, activation="relu", eta0=0.1, steps=T, samples=4096, replicas=2)
    kw.update(dtype="float32", throw=False, memory_limit=16 * 2**30)
    _, first = timed(lambda: dmft.solve_dmft(X, y, gamma0=1.0, **kw).loss)
    s, second = timed(lambda: dmft.solve_dmft(X, y, gamma0=1.0, **kw))
    report[f"mc_relu_P{P}_L{L}_T{T}_S4096_R2_float32"] = {
        "first_s": first,
        "second_s": second,
        "memory_estimate_gib": s.memory_estimate / 2**30,
        "loss_at": {str(t): float(s.loss[t]) for t in (1, T // 2, T)},
        "max_rel_error": float(np.max(np.asarray(s.loss_error)[1:] / np.asarray(s.loss)[1:])),
    }
    save()
    one = (np.ones((1, 1)), np.ones(1))
    L, T = (4, 5) if small else (128, 100)
    for dt in ("float32", "float64"):
        lin = dict(depth=L, activation="linear", eta0=0.02, steps=T, dtype=dt)
        _, first = timed(lambda: dmft.solve_dmft(*one, gamma0=1.0, **lin).loss)  # noqa: B023
        s, second = timed(lambda: dmft.solve_dmft(*one, gamma0=1.0, **lin).loss)  # noqa: B023
        # the loss falls to ~1e-26 by the last step (0 in float32): compare it early on
        loss_at = {str(t): float(s[t]) for t in (1, T // 10, T // 5)}
        report[f"linear_L{L}_T{T}_{dt}"] = {
            "first_s": first,
            "second_s": second,
            "loss_at": loss_at,
        }
        save()
    if small or jax.devices()[0].platform == "cpu" or not os.path.exists(CPU_REFERENCE):
        return
    with open(CPU_REFERENCE) as fh:
        compare_to_cpu(report, json.load(fh))
    save()


def compare_to_cpu(report, cpu):
    """Add to each solve of ``report`` also in ``cpu`` its speed-up and loss difference."""
    for name, ref in cpu.items():
        if isinstance(ref, dict) and name in report:
            here = report[name]
            here["cpu_second_s"] = ref["second_s"]
            here["speedup_vs_cpu"] = ref["second_s"] / here["second_s"]
            here["max_rel_loss_diff_vs_cpu"] = max(
                abs(here["loss_at"][t] / ref["loss_at"][t] - 1) for t in ref["loss_at"]
            )


def main(out_path=None, small=False, large_only=False):
    report = {"device": str(jax.devices()[0]), "jax": jax.__version__}

    def save():  # after every section, so a run cut off by its time limit keeps what it did
        print(json.dumps(report), flush=True)
        if out_path:
            write_json(out_path, report)

    if large_only:
        large_sizes(report, small, save)
        return
    monte_carlo(report, small)
    save()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 16)), np.sign(rng.normal(size=16))
    kw = dict(width=1024, depth=8, steps=100, seeds=16, activation="relu", dtype="float32")
    if small:
        kw.update(width=64, steps=5, seeds=2)
    _, first = timed(lambda: dmft.simulate(X, y, eta0=0.05, **kw).loss)
    _, second = timed(lambda: dmft.simulate(X, y, eta0=0.04, **kw).loss)
    report["simulate_N1024_L8_P16_T100_S16"] = {"first_s": first, "second_s": second}
    save()

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
        if small:
            lin.update(depth=4, steps=5)
        _, first = timed(lambda: dmft.solve_dmft(*one, gamma0=1.0, **lin).loss)  # noqa: B023
        s, second = timed(lambda: dmft.solve_dmft(*one, gamma0=0.9, **lin).loss)  # noqa: B023
        report[f"linear_L64_T100_{dt}"] = {
            "first_s": first,
            "second_s": second,
            "final_loss": float(s[-1]),
        }
        save()
    large_sizes(report, small, save)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else None, small="--small" in sys.argv,
         large_only="--large-only" in sys.argv)  # fmt: skip
