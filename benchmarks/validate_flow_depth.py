"""Gradient flow, infinite depth and α = 1 against ensembles of real networks (issue: flow & depth).

Two parts, so the network ensembles can run on an accelerator and the solves on a CPU:

    python benchmarks/validate_flow_depth.py networks [--quick]   # ensembles → networks JSON
    python benchmarks/validate_flow_depth.py compare [--quick]    # solves, z-scores → results JSON

``networks`` trains centred float64 ensembles at several widths for each case and stores the
mean loss and its standard error per width. ``compare`` fits ``a + b/N`` per step (weighted
least squares, as in validate_solver.py), solves the DMFT for the same settings and reports

    z(t) = (DMFT(t) − extrapolated(t)) / sqrt(SE_extrapolated(t)² + SE_MonteCarlo(t)²),

passing when max_t |z| < 3. The ensembles behind the table in docs/flow_and_depth.md (an NVIDIA
H100, about 3 minutes) are kept in benchmarks/data/flow_depth_networks_h100.json:

    python benchmarks/validate_flow_depth.py compare --networks benchmarks/data/flow_depth_networks_h100.json The depth-64 cases are compared with the DMFT at L = 64 and with the
L = ∞ limit (ladder 4, 8, 16, 32), where the allowed gap adds the measured 1/L term at L = 64,
``|q₃₂ − q_∞|/2``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import write_json  # noqa: E402
from validate_solver import data, extrapolate  # noqa: E402

import dmft  # noqa: E402

ONE = (np.ones((1, 1)), np.ones(1))

# The flow solver's grid is this many times finer than the networks' output grid; the solution
# is compared at the networks' times. A second-order flow at dτ = 0.5 still carries a step
# error of about 5e-4 in the ReLU loss at τ = 0.5 (10 against 20 steps, same sources: 0.41205
# against 0.41154), larger than the networks' standard error there (3e-4); at second order,
# halving dτ should cut it about 4× (not measured: 40 steps were not run).
REFINE = {"flow relu P=8 L=4 γ₀=1": 2}


def cases(quick):
    """(name, data, settings shared by simulate and solve_dmft, widths, seeds, network-only)."""
    X8 = data(8)
    if quick:
        w, s = [64, 128], 8
        return [
            (
                "flow linear P=1 L=2",
                ONE,
                dict(
                    depth=2, activation="linear", gamma0=1.0, dynamics="flow", t_max=0.15, steps=3
                ),
                w,
                s,
                dict(substeps=4),
            ),
            (
                "α=1 relu P=8 L=2",
                X8,
                dict(depth=2, activation="relu", gamma0=1.0, eta0=0.5, steps=3, alpha=1.0),
                w,
                s,
                {},
            ),
            (
                "depth 8 relu P=8",
                X8,
                dict(depth=8, activation="relu", gamma0=1.0, eta0=0.5, steps=3),
                w,
                s,
                {},
            ),
        ]
    small = [256, 512, 1024, 2048]
    deep = [512, 1024, 2048, 4096]
    return [
        (
            "flow linear P=1 L=4 γ₀=1",
            ONE,
            dict(depth=4, activation="linear", gamma0=1.0, dynamics="flow", t_max=0.15, steps=6),
            deep,
            128,
            dict(substeps=16),
        ),
        (
            "flow relu P=8 L=4 γ₀=1",
            X8,
            dict(depth=4, activation="relu", gamma0=1.0, dynamics="flow", t_max=5.0, steps=10),
            small,
            128,
            dict(substeps=16),
        ),
        (
            "α=1 linear P=1 L=8 γ₀=1",
            ONE,
            dict(depth=8, activation="linear", gamma0=1.0, eta0=0.05, steps=10, alpha=1.0),
            small,
            128,
            {},
        ),
        (
            "α=1 relu P=8 L=8 γ₀=1",
            X8,
            dict(depth=8, activation="relu", gamma0=1.0, eta0=0.5, steps=10, alpha=1.0),
            small,
            128,
            {},
        ),
        (
            "depth 64 linear P=1 γ₀=1",
            ONE,
            dict(depth=64, activation="linear", gamma0=1.0, eta0=0.02, steps=8),
            deep,
            64,
            {},
        ),
        (
            "depth 64 relu P=8 γ₀=1",
            X8,
            dict(depth=64, activation="relu", gamma0=1.0, eta0=0.5, steps=10),
            deep,
            64,
            {},
        ),
    ]


def run_networks(args):
    out = {"device": str(jax.devices()[0]), "cases": {}}
    for name, (X, y), kw, widths, seeds, extra in cases(args.quick):
        rows = []
        for n in widths:
            t0 = time.perf_counter()
            res = dmft.simulate(
                X,
                y,
                width=n,
                seeds=seeds,
                seed=11,
                center=True,
                memory_budget=args.memory_budget,
                **kw,
                **extra,
            )
            rows.append(
                dict(
                    width=n,
                    mean=res.mean().tolist(),
                    se=res.stderr().tolist(),
                    ntk=res.mean("ntk").tolist(),
                    ntk_se=res.stderr("ntk").tolist(),
                    seconds=time.perf_counter() - t0,
                )
            )
            print(f"{name:28s} N={n:5d} {rows[-1]['seconds']:.1f}s", flush=True)
        out["cases"][name] = dict(settings=kw, network_only=extra, seeds=seeds, rows=rows)
        write_json(args.networks, out)  # after every case: a cut-off run keeps what it did
    print("wrote", args.networks)


def zscore(dmft_loss, dmft_se, ext, ext_se):
    comb = np.sqrt(ext_se**2 + dmft_se**2)
    return (dmft_loss - ext)[1:] / comb[1:]


def run_compare(args):
    with open(args.networks) as fh:
        nets = json.load(fh)
    samples, replicas = (4096, 2) if args.quick else (args.samples, args.replicas)
    report = {
        "networks_device": nets["device"],
        "samples": samples,
        "replicas": replicas,
        "cases": [],
    }
    # a renamed case would silently lose its refinement
    unknown = set(REFINE) - {c[0] for c in cases(False)}
    assert not unknown, f"REFINE names no case: {unknown}"
    for name, (X, y), kw, _, _, _ in cases(args.quick):
        if args.only and args.only not in name:
            continue
        if name not in nets["cases"]:
            print(f"{name}: no network data, skipped")
            continue
        rows = nets["cases"][name]["rows"]
        widths = [r["width"] for r in rows]
        ext, ext_se = extrapolate(
            widths, np.array([r["mean"] for r in rows]), np.array([r["se"] for r in rows])
        )
        t0 = time.perf_counter()
        mc = dict(samples=samples, replicas=replicas, memory_limit=args.memory_limit, throw=False)
        if kw["depth"] > 32 and not args.quick:  # memory: fewer sites at depth 64
            mc["samples"] = samples // 2
        refine = REFINE.get(name, 1)
        sol = dmft.solve_dmft(X, y, **mc, **dict(kw, steps=kw["steps"] * refine))
        seconds = time.perf_counter() - t0
        loss, se = np.asarray(sol.loss)[::refine], np.asarray(sol.loss_error)[::refine]
        z = zscore(loss, se, ext, ext_se)
        row = dict(
            name=name,
            settings=kw,
            solver_steps=kw["steps"] * refine,
            widths=widths,
            seeds=nets["cases"][name]["seeds"],
            dmft=loss.tolist(),
            dmft_se=se.tolist(),
            networks=ext.tolist(),
            networks_se=ext_se.tolist(),
            widest=rows[-1]["mean"],
            max_abs_z=float(np.abs(z).max()),
            passed=bool(np.abs(z).max() < 3),
            max_rel_diff=float(np.max(np.abs(loss / ext - 1))),
            seconds_solver=seconds,
        )
        msg = f"{name:28s} L={kw['depth']}: max|z| {row['max_abs_z']:.2f}"
        if name.startswith("depth"):
            t0 = time.perf_counter()
            depths = (2, 4, 8) if args.quick else (4, 8, 16, 32)
            inf = dmft.solve_dmft(X, y, **mc, **dict(kw, depth=math.inf, depths=depths))
            li, lse = np.asarray(inf.loss), np.asarray(inf.loss_error)
            one_over_L = np.abs(np.asarray(inf.ladder[-1].loss) - li) * depths[-1] / kw["depth"]
            gap = np.abs(li - ext)[1:]
            allowed = 3 * np.sqrt(ext_se**2 + lse**2)[1:] + one_over_L[1:]
            row.update(
                infinite=li.tolist(),
                infinite_se=lse.tolist(),
                depth_term_at_L=one_over_L.tolist(),
                infinite_depth_error=np.asarray(inf.depth_error).tolist(),
                infinite_max_gap_over_allowed=float(np.max(gap / allowed)),
                infinite_passed=bool(np.all(gap < allowed)),
                seconds_infinite=time.perf_counter() - t0,
            )
            msg += f"; L=∞: max gap/allowed {row['infinite_max_gap_over_allowed']:.2f}"
        report["cases"].append(row)
        print(msg, flush=True)
    write_json(args.out, report)
    print("wrote", args.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("networks", "compare"))
    ap.add_argument("--quick", action="store_true", help="small sizes, for CI")
    ap.add_argument("--networks", default="benchmarks/results/flow_depth_networks.json")
    ap.add_argument("--out", default="benchmarks/results/validate_flow_depth.json")
    ap.add_argument(
        "--memory-budget",
        type=int,
        default=2 * 2**30,
        help="bytes per compiled chunk of seeds (raise it on an accelerator)",
    )
    ap.add_argument("--samples", type=int, default=65536, help="Monte Carlo sites per replica")
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--memory-limit", type=int, default=20 * 2**30)
    ap.add_argument("--only", default=None, help="the cases whose name contains this")
    args = ap.parse_args()
    (run_networks if args.part == "networks" else run_compare)(args)


if __name__ == "__main__":
    main()
