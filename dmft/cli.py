"""The ``dmft`` command line: ``dmft solve``, ``dmft simulate``, ``dmft show``, ``dmft study``
and ``dmft demo``.

``dmft solve`` and ``dmft simulate`` take their settings as flags, from a TOML file
(``--config``, tables ``[data]``, ``[settings]`` and ``[output]``; flags win), or both.
They print a summary, write the result with ``--out`` (read it back with ``dmft.load`` or
``dmft show``) and plot the loss with ``--figure``. The exit status is 0 when the run is ``ok``,
1 when it diverged or did not converge (the result is still written), 2 for bad input.

A study's TOML file has the tables ``[data]`` (``points``, ``dim``, ``seed`` for random data,
or ``file`` naming an .npz with arrays ``X``, ``y``), ``[settings]`` (keywords shared by
``simulate`` and ``solve_dmft``), ``[study]`` (``widths``, ``depths``, ``seeds``,
``seed``, ``quantities``, ``limit``, ``limit_depths``), ``[solver]`` (keywords for ``solve_dmft`` only)
and ``[output]`` (``cache``, ``result``, ``figure``; paths relative to the TOML file).
``examples/convergence_linear.toml`` is a complete example.
"""

from __future__ import annotations

import argparse
import math
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
        try:
            with np.load(os.path.join(here, data["file"])) as f:
                arrays = {k: f[k] for k in ("X", "y", "X_test", "y_test") if k in f.files}
        except (OSError, ValueError) as err:
            raise SystemExit(f"cannot read the data file {data['file']}: {err}") from err
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


# Flags of `solve` and `simulate`: (name, type, help). None as type: a switch.
SHARED_FLAGS = [
    ("depth", "depth", "depth L >= 1 (solve: or 'inf' for the L → ∞ limit)"),
    ("activation", str, "'linear', 'relu' or 'tanh'"),
    ("beta0", float, "branch scale β₀ >= 0"),
    ("gamma0", float, "feature-learning strength γ₀ > 0"),
    ("eta0", float, "learning rate η₀ >= 0 (unused by gradient flow)"),
    ("steps", int, "number of updates T (flow: intervals of the time grid)"),
    ("alpha", float, "branch exponent α in [1/2, 1]"),
    ("dynamics", str, "'gd' or 'flow'"),
    ("t_max", float, "final time of gradient flow"),
    ("momentum", float, "heavy-ball momentum μ in [0, 1)"),
    ("batch_size", int, "minibatch size for SGD (default: full batch)"),
    ("batch_seed", int, "seed of the minibatch schedule"),
    ("seed", int, "random seed (solve: Monte Carlo sources; simulate: initialisations)"),
    ("dtype", str, "'float32' or 'float64'"),
]
SOLVE_FLAGS = [
    ("method", str, "'auto', 'exact' (linear) or 'monte-carlo'"),
    ("samples", int, "Monte Carlo sites per replica"),
    ("replicas", int, "independent Monte Carlo replicas (>= 2)"),
    ("sampling", str, "Monte Carlo sources: 'sobol' (scrambled Sobol' points) or 'random'"),
    ("tol", float, "largest accepted relative Monte Carlo error of the loss"),
    ("devices", int, "spread the Monte Carlo sites over the first n local devices (default: all)"),
    ("depths", "ints", "depth ladder for depth=inf, comma separated, e.g. 4,8,16,32"),
    ("flow_order", int, "1 or 2: order in the time step of the flow solver"),
    ("no_responses", None, "drop the response terms Aˡ, Bˡ (the ablation)"),
]
SIMULATE_FLAGS = [
    ("width", int, "width N"),
    ("seeds", int, "number of networks in the ensemble"),
    ("parameterization", str, "'depth-mup', 'mup' or 'sp'"),
    ("optimizer", str, "'gd' or 'adam'"),
    ("center", None, "train f − f(init) (removes the initial output's 1/N noise)"),
    ("substeps", int, "Heun substeps per interval for dynamics='flow'"),
]
DATA_FLAGS = ("points", "dim", "data_seed", "data")


def _depth(text):
    if str(text).lower() in ("inf", "infinity", "math.inf"):
        return math.inf
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"depth must be an int or 'inf', got {text!r}") from None


def _ints(text):
    try:
        return tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


RUN_EPILOG = (
    "The --config TOML file may hold [data] (points, dim, seed, or file = an .npz with X, y), "
    '[settings] (any setting above, spelled with underscores, e.g. t_max; depth = "inf" '
    "for the solver's L → ∞ limit) and [output] (out, figure; paths relative to the TOML "
    "file). Flags override the file. Exit status: 0 when the run is ok; 1 when it diverged or "
    "did not converge (the summary says what to change; the result is still written); 2 for "
    "bad input."
)


def _add_run_flags(p, flags):
    p.epilog = RUN_EPILOG
    group = p.add_argument_group("settings (override the TOML file's [settings])")
    for name, kind, text in flags:
        flag = "--" + name.replace("_", "-")
        if kind is None:
            group.add_argument(flag, action="store_true", default=None, help=text)
        else:
            conv = {"depth": _depth, "ints": _ints}.get(kind, kind)
            group.add_argument(flag, type=conv, default=None, help=text)
    data = p.add_argument_group("data (override [data]; default: 4 Gaussian points in 10 dims)")
    data.add_argument("--points", type=int, default=None, help="number of random training points P")
    data.add_argument("--dim", type=int, default=None, help="input dimension D")
    data.add_argument("--data-seed", type=int, default=None, help="seed of the random data")
    data.add_argument("--data", default=None, help=".npz file with arrays X, y (X_test, y_test)")
    out = p.add_argument_group("input and output")
    out.add_argument("--config", help="TOML file with [data], [settings] and [output] tables")
    out.add_argument("--out", help="write the result here (.npz; read it with dmft.load)")
    out.add_argument("--figure", help="plot the loss here (.png)")
    quiet = out.add_mutually_exclusive_group()
    quiet.add_argument("--quiet", action="store_true", help="no progress bar")
    quiet.add_argument("--progress", action="store_true", help="a progress bar even when piped")


def _run_config(args, flags):
    """Settings and data from ``--config`` and the flags (flags win); errors exit with 2."""
    cfg = {"data": {}, "settings": {}, "output": {}}
    here = os.getcwd()
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                loaded = tomllib.load(fh)
        except OSError as err:
            raise SystemExit(f"cannot read --config: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise SystemExit(f"{args.config}: not valid TOML ({err})") from err
        unknown = set(loaded) - set(cfg)
        if unknown:
            raise SystemExit(
                f"{args.config}: unknown tables {sorted(unknown)}; expected {sorted(cfg)}"
            )
        cfg.update(loaded)
        here = os.path.dirname(os.path.abspath(args.config))
        known = {name for name, _, _ in flags} | {"responses"}
        bad = set(cfg["settings"]) - known
        if bad:
            raise SystemExit(
                f"{args.config}: unknown [settings] keys {sorted(bad)}; expected {sorted(known)}"
            )
        bad = set(cfg["output"]) - {"out", "figure"}
        if bad:
            raise SystemExit(f"{args.config}: unknown [output] keys {sorted(bad)}")
    settings = dict(cfg["settings"])
    if "depth" in settings:
        settings["depth"] = _depth(settings["depth"])
    for name, _, _ in flags:
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    if settings.pop("no_responses", None):
        settings["responses"] = False
    data = dict(cfg["data"])
    for key in DATA_FLAGS:
        value = getattr(args, key)
        if value is not None:
            data["seed" if key == "data_seed" else "file" if key == "data" else key] = value
    if "file" in data:
        path = os.path.join(here if args.data is None else os.getcwd(), data["file"])
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("X", "y", "X_test", "y_test") if k in f.files}
        except (OSError, ValueError) as err:
            raise SystemExit(f"cannot read the data file {path}: {err}") from err
        if "X" not in arrays or "y" not in arrays:
            raise SystemExit(f"{path}: needs arrays X and y")
    else:
        bad = set(data) - {"points", "dim", "seed"}
        if bad:
            raise SystemExit(f"unknown [data] keys {sorted(bad)}; expected points, dim, seed, file")
        X, y = random_data(
            int(data.get("points", 4)), int(data.get("dim", 10)), int(data.get("seed", 0))
        )
        arrays = {"X": X, "y": y}
    out = {k: os.path.join(here, v) for k, v in cfg["output"].items()}
    if args.out:
        out["out"] = args.out
    if args.figure:
        out["figure"] = args.figure
    return settings, arrays, out


def _finish_run(result, out, kind) -> int:
    print(result)
    status = result.status
    final = np.asarray(result.loss)
    timings = getattr(result, "_timings", {})
    if final.ndim == 2:
        mean = result.mean("loss")[-1]
        print(f"final loss {mean:.6g} ± {result.stderr('loss')[-1]:.2g} (mean ± s.e. over seeds)")
    else:
        err = result.loss_error
        extra = "" if err is None or float(err[-1]) == 0 else f" ± {float(err[-1]):.2g}"
        print(f"final loss {float(final[-1]):.6g}{extra}")
        for name, what in (("depth_error", "L → ∞ extrapolation"), ("time_error", "time step")):
            value = getattr(result, name, None)
            if value is not None:
                print(f"error estimate of the {what}: {float(np.asarray(value)[-1]):.2g}")
    if timings:
        print(f"{kind} took {timings['wall_seconds']:.1f} s (compilation included)")
    print(f"status: {status}")
    if out.get("out"):
        result.save(out["out"])
        print(f"result written to {out['out']}")
    if out.get("figure"):
        import matplotlib

        matplotlib.use("Agg")
        from dmft.plot import plot_loss, save_figure

        fig, ax = plot_loss(result, label=kind)
        if np.all(np.isfinite(np.asarray(result.loss))):
            ax.set_title(
                f"{kind}: {result.config.get('activation')}, L = {result.config.get('depth')}"
            )
        save_figure(fig, out["figure"])
        print(f"figure written to {out['figure']}")
    return 0 if status == "ok" else 1


def _call(fn, data, settings):
    try:
        return fn(
            data["X"], data["y"], X_test=data.get("X_test"), y_test=data.get("y_test"), **settings
        )
    except (ValueError, TypeError) as err:
        raise SystemExit(f"bad settings: {err}") from err


def cmd_solve(args) -> int:
    from dmft import solve_dmft

    settings, data, out = _run_config(args, SHARED_FLAGS + SOLVE_FLAGS)
    if "depth" not in settings or "steps" not in settings:
        raise SystemExit("dmft solve needs --depth and --steps (or [settings] depth, steps)")
    settings.update(throw=False, progress=_progress(args))
    return _finish_run(_call(solve_dmft, data, settings), out, "DMFT")


def cmd_simulate(args) -> int:
    from dmft import simulate

    settings, data, out = _run_config(args, SHARED_FLAGS + SIMULATE_FLAGS)
    for key in ("width", "depth", "steps"):
        if key not in settings:
            raise SystemExit(f"dmft simulate needs --{key} (or [settings] {key})")
    if settings.get("depth") == math.inf:
        raise SystemExit("dmft simulate needs a finite --depth")
    settings.update(throw=False, progress=_progress(args))
    return _finish_run(_call(simulate, data, settings), out, "networks")


def _progress(args):
    return False if args.quiet else (True if args.progress else None)


def cmd_show(args) -> int:
    from dmft import io

    try:
        meta = io.read_metadata(args.file)
        result = io.load(args.file)
    except (OSError, ValueError) as err:
        print(f"cannot load {args.file}: {err}", file=sys.stderr)
        return 2
    print(result)
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    print(f"saved {meta.get('saved_at')} on {meta.get('device')} ({versions})")
    if meta.get("timings"):
        print(f"timings: {meta['timings']}")
    settings = getattr(result, "config", None) or getattr(result, "settings", None)
    if settings:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in dict(settings).items()))
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
            + __doc__.split("\n\n")[2].replace("\n", " ").replace("``", "")
        ),
    )
    p.add_argument("config", help="the study's TOML file")
    p.add_argument("--cache", help="folder of finished points (overrides [output] cache)")
    p.add_argument("--out", help="write the study here, .npz (overrides [output] result)")
    p.add_argument("--figure", help="write the plot here, .png (overrides [output] figure)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser(
        "solve",
        help="solve the N = ∞ DMFT (finite depth or depth=inf) and print/write the result",
        description=(
            "Solve the infinite-width DMFT of a depth-μP ResNet (dmft.solve_dmft) on random "
            "Gaussian data or an .npz file, print a summary (shapes, final loss, Monte Carlo "
            "error, status), and optionally write the result (--out) and a loss plot (--figure). "
            "Unset settings take dmft.solve_dmft's defaults. "
            "Example: dmft solve --depth 8 --activation relu --eta0 0.1 --steps 50 --out sol.npz"
        ),
    )
    _add_run_flags(p, SHARED_FLAGS + SOLVE_FLAGS)
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser(
        "simulate",
        help="train an ensemble of finite networks and print/write the result",
        description=(
            "Train an ensemble of finite ResNets (dmft.simulate) on random Gaussian data or an "
            ".npz file, print a summary (shapes, mean final loss ± standard error, status), and "
            "optionally write the result (--out) and a loss plot (--figure). Unset settings take "
            "dmft.simulate's defaults. Example: "
            "dmft simulate --width 256 --depth 8 --eta0 0.1 --steps 50 --seeds 8 --out sim.npz"
        ),
    )
    _add_run_flags(p, SHARED_FLAGS + SIMULATE_FLAGS)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "show",
        help="print a saved result's summary, settings, versions and timings",
        description="Load a file written by dmft.save / --out and print what it holds.",
    )
    p.add_argument("file", help="the .npz result file")
    p.epilog = "exit status: 0 when the file loads, 2 when it cannot be read (with the reason)"
    p.set_defaults(func=cmd_show)

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
    try:
        return args.func(args)
    except argparse.ArgumentTypeError as err:  # a bad value in a TOML file, not a flag
        print(f"dmft {args.command}: {err}", file=sys.stderr)
        return 2
    except SystemExit as stop:
        if isinstance(stop.code, str):  # bad input: say why, exit 2 as argparse does
            print(f"dmft {args.command}: {stop.code}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
