"""The ``dmft`` command line: ``dmft demo`` and ``dmft study CONFIG.toml``.

A study's TOML file has the tables ``[data]`` (``points``, ``dim``, ``seed`` for random data,
or ``file`` naming an .npz with arrays ``X``, ``y``), ``[settings]`` (keywords shared by
``simulate`` and ``solve_dmft``), ``[study]`` (``widths``, ``depths``, ``seeds``,
``seed``, ``quantities``, ``limit``, ``limit_depths``), ``[solver]`` (keywords for ``solve_dmft`` only)
and ``[output]`` (``cache``, ``result``, ``figure``; paths relative to the TOML file).
``examples/convergence_linear.toml`` is a complete example.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib

import numpy as np

STUDY_KEYS = ("widths", "depths", "seeds", "seed", "quantities", "limit", "limit_depths")
TABLES = ("data", "settings", "study", "solver", "output")


def random_data(points: int, dim: int, seed: int = 0):
    """``points`` Gaussian inputs in ``dim`` dimensions with ±1 targets (the demo's data)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(points, dim))
    y = np.sign(rng.normal(size=points))
    y[y == 0] = 1.0
    return X, y


def load_config(path):
    """Read and check a study's TOML file; returns (config dict, data dict)."""
    try:
        with open(path, "rb") as fh:
            cfg = tomllib.load(fh)
    except OSError as err:
        raise SystemExit(f"cannot read the study's TOML file: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise SystemExit(f"{path}: not valid TOML ({err})") from err
    unknown = set(cfg) - set(TABLES)
    if unknown:
        raise SystemExit(f"{path}: unknown tables {sorted(unknown)}; expected {TABLES}")
    study = cfg.get("study", {})
    bad = set(study) - set(STUDY_KEYS)
    if bad:
        raise SystemExit(f"{path}: unknown [study] keys {sorted(bad)}; expected {STUDY_KEYS}")
    for key in ("widths", "depths"):
        if key not in study:
            raise SystemExit(f"{path}: [study] needs `{key}`")
    here = os.path.dirname(os.path.abspath(path))
    data = cfg.get("data", {})
    if "file" in data:
        with np.load(os.path.join(here, data["file"])) as f:
            arrays = {k: f[k] for k in ("X", "y", "X_test", "y_test") if k in f.files}
        if "X" not in arrays or "y" not in arrays:
            raise SystemExit(f"{data['file']}: needs arrays X and y")
    else:
        bad = set(data) - {"points", "dim", "seed"}
        if bad:
            raise SystemExit(f"{path}: unknown [data] keys {sorted(bad)}")
        X, y = random_data(
            int(data.get("points", 4)), int(data.get("dim", 16)), int(data.get("seed", 0))
        )
        arrays = {"X": X, "y": y}
    out = cfg.get("output", {})
    cfg["output"] = {k: os.path.normpath(os.path.join(here, v)) for k, v in out.items()}
    return cfg, arrays


def cmd_study(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dmft.convergence import convergence_study, summarize
    from dmft.plot import plot_convergence, save_figure

    cfg, data = load_config(args.config)
    out = cfg["output"]
    cache = args.cache or out.get("cache")
    study = convergence_study(
        data["X"],
        data["y"],
        X_test=data.get("X_test"),
        y_test=data.get("y_test"),
        solver_options=cfg.get("solver", {}),
        cache_dir=cache,
        progress=not args.quiet,
        **cfg.get("study", {}),
        **cfg.get("settings", {}),
    )
    print(summarize(study))
    result = args.out or out.get("result")
    if result:
        study.save(result)
        print(f"study written to {result}")
    figure = args.figure or out.get("figure")
    if figure:
        quantities = [q for q in ("loss", "ntk") if q in study.quantities] or [study.quantities[0]]
        fig, axes = plt.subplots(
            len(quantities),
            3 if study.limit is not None and len(study.depths) >= 2 else 1,
            figsize=(13, 3.6 * len(quantities)),
            constrained_layout=True,
            squeeze=False,
        )
        for row, q in zip(axes, quantities, strict=True):
            plot_convergence(study, q, axes=row)
        save_figure(fig, figure)
        print(f"figure written to {figure}")
    return 0


def cmd_demo(args) -> int:
    from dmft import demo

    demo.run(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmft",
        description="DMFT of deep residual networks in the joint width-depth limit.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "study",
        help="run a finite-width/finite-depth convergence study from a TOML file",
        description=(
            "Train networks over a grid of widths and depths, solve the DMFT at every depth and "
            "at L = ∞, fit the rates in N and L, print them, and write the study and its plot. "
            "Finished points are cached, so rerunning an interrupted study resumes it. "
            + __doc__.split("\n\n")[1].replace("\n", " ").replace("``", "")
        ),
    )
    p.add_argument("config", help="the study's TOML file")
    p.add_argument("--cache", help="folder of finished points (overrides [output] cache)")
    p.add_argument("--out", help="write the study here, .npz (overrides [output] result)")
    p.add_argument("--figure", help="write the plot here, .png (overrides [output] figure)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser(
        "demo",
        help="a small DMFT solve next to networks of growing width, with its plot",
        description="Solve a small linear DMFT, train networks at N = 64, 256, 1024, plot both.",
    )
    p.add_argument("--out", default="figures/demo.png", help="where to write the figure")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
