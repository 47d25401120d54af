"""The default convergence study (examples/convergence_linear.toml) timed from an empty cache,
with where the time goes and every fitted rate.

    python benchmarks/convergence_study.py            # N = 64 … 1024, L = 2 … 32, 32 seeds
    python benchmarks/convergence_study.py --small    # a 2 × 2 grid, 4 seeds, for CI

Writes a JSON of timings and fits (``--out``), the study itself (``--save``, .npz) and its
figure (``--figure``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _results import write_json  # noqa: E402

import dmft  # noqa: E402
from dmft import cli  # noqa: E402
from dmft.convergence import summarize  # noqa: E402

CONFIG = os.path.join(HERE, "..", "examples", "convergence_linear.toml")


def _fit(fn, **kw):
    try:
        f = fn(**kw)
    except ValueError as err:
        return {"note": str(err)}
    return {"exponent": f.exponent, "interval": f.interval, "values": f.y[:, 0].tolist()}


def _joint(study, q, **kw):
    j = dmft.fit_joint(study, q, **kw)
    return {
        "terms": j.terms,
        "depths": j.depths,
        "chi2": j.chi2,
        "dof": j.dof,
        "chi2_per_dof": j.chi2 / j.dof,
        "p_value": j.p_value,
        "max_cell_residual": float(j.residuals.max()),
        "residuals": j.residuals.tolist(),
        "rms_coefficients": {t: float(np.sqrt(np.mean(c**2))) for t, c in j.coefficients.items()},
    }


def fits(study):
    """Every fit of the note: width exponents; depth exponents on all depths, on L >= 8, and
    with the next-order correction; the joint model on the whole grid, on L >= 8, and with a
    1/L² term."""
    out = {}
    for q in study.quantities:
        w = dmft.fit_width_rate(study, q)
        entry = {"width": {"exponent": w.exponent, "interval": w.interval}}
        if study.limit is not None and len(study.depths) >= 3:
            for name, kw in (
                ("all", {}),
                ("L>=8", {"min_depth": 8}),
                ("corrected", {"correction": True}),
            ):
                entry[f"depth_networks_{name}"] = _fit(
                    dmft.fit_depth_rate, study=study, quantity=q, **kw
                )
                entry[f"depth_dmft_{name}"] = _fit(
                    dmft.fit_depth_rate, study=study, quantity=q, dmft=True, **kw
                )
            entry["joint_all"] = _joint(study, q)
            entry["joint_L>=8"] = _joint(study, q, min_depth=8)
            entry["joint_with_1/L^2"] = _joint(study, q, terms=("1/N", "1/L", "1/L^2"))
        out[q] = entry
    return out


def figure(study, cfg, data, path):
    """Loss and NTK rows: width fit; depth fits with the next-order correction; the joint
    a/N + b/L model on L >= 8 and, with a 1/L² term, on the whole grid."""
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.4), constrained_layout=True)
    deep = [L for L in study.depths if L >= 8]
    for row, q in zip(axes, ("loss", "ntk"), strict=True):
        dmft.plot_convergence(study, q, correction=True, axes=row[:3])
        if len(deep) >= 2:
            row[2].clear()
            dmft.plot_joint_fit(study, q, min_depth=8, ax=row[2])
        dmft.plot_joint_fit(study, q, terms=("1/N", "1/L", "1/L^2"), ax=row[3])
    fig.suptitle(
        f"linear depth-μP ResNets, P = {len(data['y'])}, γ₀ = {cfg['settings']['gamma0']}, "
        f"{study.seeds} seeds per point; every deviation averaged over the "
        f"{cfg['settings']['steps']} steps",
        fontsize=10,
    )
    dmft.save_figure(fig, path)
    print(f"figure {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "convergence_study.json"))
    parser.add_argument("--save", default=None, help="write the study (.npz)")
    parser.add_argument("--figure", default=None, help="write the figure (.png)")
    args = parser.parse_args()
    cfg, data = cli.load_config(CONFIG)
    study_args = dict(cfg["study"])
    if args.small:
        study_args.update(widths=[64, 128], depths=[2, 4], seeds=4, limit_depths=[2, 4])
    with tempfile.TemporaryDirectory() as cache:  # empty: time every point
        t0 = time.perf_counter()
        study = dmft.convergence_study(
            data["X"],
            data["y"],
            **study_args,
            **cfg["settings"],
            solver_options=cfg.get("solver", {}),
            cache_dir=cache,
            progress=True,
        )
        total = time.perf_counter() - t0
    print(summarize(study))
    print(f"total {total:.1f} s")

    # compilation against run time: the largest and smallest network points once more, compiled
    compiled = {}
    for n, L in ((study.widths[-1], study.depths[-1]), (study.widths[0], study.depths[0])):
        dmft.simulate(
            data["X"], data["y"], width=n, depth=L, seeds=study.seeds, seed=1, **cfg["settings"]
        )  # make sure this shape is compiled in this process
        t1 = time.perf_counter()
        dmft.simulate(
            data["X"], data["y"], width=n, depth=L, seeds=study.seeds, seed=2, **cfg["settings"]
        )
        compiled[f"N={n},L={L}"] = {
            "in_study_s": next(
                v
                for k, v in study.timings["points"].items()
                if k.startswith(f"simulate width={n}, depth={L},")
            ),
            "compiled_s": time.perf_counter() - t1,
        }
    points = study.timings["points"]
    by_depth = {
        str(L): sum(v for k, v in points.items() if k.startswith("simulate") and f"depth={L}," in k)
        for L in study.depths
    }
    by_width = {
        str(n): sum(v for k, v in points.items() if k.startswith(f"simulate width={n},"))
        for n in study.widths
    }
    payload = {
        "config": CONFIG,
        "small": args.small,
        "grid": {"widths": study.widths, "depths": study.depths, "seeds": study.seeds},
        "settings": cfg["settings"],
        "total_s": total,
        "simulate_s": study.timings["simulate"],
        "solve_s": study.timings["solve"],
        "limit_s": study.timings["limit"],
        "simulate_by_depth_s": by_depth,
        "simulate_by_width_s": by_width,
        "compile_vs_run": compiled,
        "points_s": points,
        "fits": fits(study),
        "summary": summarize(study),
    }
    write_json(args.out, payload)
    print(f"written {args.out}")
    if args.save:
        study.save(args.save)
    if args.figure:
        figure(study, cfg, data, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
