"""Width exponents of the convergence study for linear (P = 1) and ReLU (P = 8) networks at
γ₀ = 0.5 and 2, and the depth exponents of a ReLU study.

    python benchmarks/validate_convergence.py            # about 15 min on 2 cores
    python benchmarks/validate_convergence.py --quick    # small sizes, for CI

``width``: for each case a study over N = 64 … 1024 at two depths (64 seeds per point, no
L = ∞ solve) and the fitted exponent of E[(q_N − q_{∞,L})²] for the loss and the NTK, pooled
over the depths, with its bootstrap 95% interval. The ReLU references are Monte Carlo solves
with 4 × 65536 sites, whose own noise is reported next to the smallest mean-squared deviation.
``depth``: a ReLU study (P = 4) over L = 2 … 16 at N = 256, 512, 1024 with its L = ∞ solve;
the exponent of |E[q_{N,L}] − q_{∞,∞}| at the largest N and of the DMFT's own depth error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _results import write_json  # noqa: E402

import dmft  # noqa: E402
from dmft.cli import random_data  # noqa: E402

WIDTH_CASES = [
    ("linear", 1, 0.5),
    ("linear", 1, 2.0),
    ("relu", 8, 0.5),
    ("relu", 8, 2.0),
]


def width_part(quick):
    out = []
    for act, P, g0 in WIDTH_CASES:
        X, y = random_data(P, 16, 0)
        settings = dict(activation=act, beta0=1.0, gamma0=g0, steps=20, center=True)
        settings["eta0"] = 0.02 if act == "linear" else 0.1
        solver = {} if act == "linear" else dict(samples=65536, replicas=4, tol=1.0)
        if quick:
            grid = dict(widths=(32, 64), depths=(2,), seeds=4)
            settings["steps"] = 4
            solver = {} if act == "linear" else dict(samples=4096, replicas=2, tol=1.0)
        else:
            grid = dict(widths=(64, 128, 256, 512, 1024), depths=(2, 4), seeds=64)
        t0 = time.perf_counter()
        study = dmft.convergence_study(
            X, y, **grid, **settings, limit=False, solver_options=solver, progress=True
        )
        entry = dict(activation=act, points=P, gamma0=g0, seconds=time.perf_counter() - t0)
        entry.update(grid=grid, settings=settings, solver=solver)
        for q in ("loss", "ntk"):
            fit = dmft.fit_width_rate(study, q)
            entry[q] = dict(
                exponent=fit.exponent,
                interval=fit.interval,
                within_015=abs(fit.exponent + 1) <= 0.15,
                consistent=fit.consistent,
                msd=fit.y.tolist(),
            )
            print(f"{act} P={P} γ₀={g0}: {fit}", flush=True)
        # the reference's own noise against the smallest deviation it is compared with
        ref_err = float(np.max(study.reference_error["loss"]))
        entry["loss"]["reference_se_sq_over_min_msd"] = ref_err**2 / float(
            np.min(entry["loss"]["msd"])
        )
        out.append(entry)
    return out


def depth_part(quick, save=None):
    X, y = random_data(4, 16, 0)
    settings = dict(activation="relu", beta0=1.0, gamma0=1.0, eta0=0.1, steps=10, center=True)
    solver = dict(samples=65536, replicas=4, tol=1.0)
    grid = dict(widths=(256, 512, 1024), depths=(2, 4, 8, 16), seeds=64)
    limit_depths = (4, 8, 16)
    if quick:
        grid = dict(widths=(32, 64), depths=(2, 4), seeds=4)
        settings["steps"] = 3
        solver = dict(samples=4096, replicas=2, tol=1.0)
        limit_depths = (2, 4)
    t0 = time.perf_counter()
    study = dmft.convergence_study(
        X, y, **grid, **settings, limit_depths=limit_depths, solver_options=solver, progress=True
    )
    entry = dict(seconds=time.perf_counter() - t0, grid=grid, settings=settings, solver=solver)
    for q in ("loss", "ntk"):
        res = {}
        for name, kw in (
            ("networks", {}),
            ("dmft", {"dmft": True}),
            ("networks_corrected", {"correction": True}),
            ("dmft_corrected", {"dmft": True, "correction": True}),
        ):
            try:
                fit = dmft.fit_depth_rate(study, q, **kw)
                res[name] = dict(
                    exponent=fit.exponent, interval=fit.interval, values=fit.y[:, 0].tolist()
                )
                print(f"ReLU depth, {name}: {fit}", flush=True)
            except ValueError as err:
                res[name] = dict(exponent=None, note=str(err))
                print(f"ReLU depth, {name}: {err}", flush=True)
        joint = dmft.fit_joint(study, q)
        res["joint"] = dict(
            chi2=joint.chi2,
            dof=joint.dof,
            p_value=joint.p_value,
            residuals=joint.residuals.tolist(),
        )
        print(joint, flush=True)
        entry[q] = res
    if save:
        study.save(save)
    return entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("width", "depth"), default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "validate_convergence.json"))
    parser.add_argument("--save", default=None, help="write the depth study here (.npz)")
    args = parser.parse_args()
    payload = {}
    if args.only in (None, "width"):
        payload["width"] = width_part(args.quick)
    if args.only in (None, "depth"):
        payload["depth"] = depth_part(args.quick, args.save)
    write_json(args.out, payload)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
