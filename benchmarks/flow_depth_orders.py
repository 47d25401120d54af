"""Convergence orders of the gradient-flow and infinite-depth solvers, the cost of the depth
ladder, and the α = 1/2 versus α = 1 figure.

    python benchmarks/flow_depth_orders.py            # everything (about 35 min on 2 cores)
    python benchmarks/flow_depth_orders.py --quick    # small sizes, for CI

Sections (each writes its numbers into one JSON):

- ``flow_order``: max error of the loss on the grid against a fine-grid solve, for steps
  n = 8 … 64 against 256 steps (linear, exact), at flow_order 1 and 2; slopes of log error
  on log dτ.
- ``relu_flow_order``: the same orders for ReLU with sampled sites, the grids coupled through
  one fine solve (``coarse_innovations``), errors averaged over seeds (``relu_flow_order``'s
  docstring).
- ``gd_to_flow``: gradient descent with η₀ = t_max/n against the flow at the same times; slope.
- ``depth``: |q_L − q_∞| for loss and NTK at the last step, q_∞ from the ladder's Richardson
  extrapolation; slope of log gap on log L (least squares), and the slope of successive
  differences |q_L − q_2L|, which needs no q_∞.
- ``ladder_cost``: wall time of ``depth=math.inf`` against one solve at the ladder's deepest
  depth, both compiled (second call with a new γ₀) and first call (compilation included).
- ``alpha``: the figure docs/figures/alpha_limits.png.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import write_json  # noqa: E402
from validate_solver import data  # noqa: E402

import dmft  # noqa: E402

ONE = (np.ones((1, 1)), np.ones(1))


def slope(x, y):
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def flow_order(quick):
    out = {}
    lin = dict(depth=4, activation="linear", gamma0=1.0, dynamics="flow", t_max=0.25)
    specs = [("linear P=1 L=4", ONE, lin, (8, 16) if quick else (8, 16, 32, 64), 256)]
    for name, (X, y), kw, grid, ref_steps in specs:
        t0 = time.perf_counter()
        ref = np.asarray(dmft.solve_dmft(X, y, steps=ref_steps, throw=False, **kw).loss)
        # compare on the coarsest grid's times, which every grid has
        row = {
            "steps": list(grid),
            "reference_steps": ref_steps,
            "times": list(np.linspace(0, kw["t_max"], grid[0] + 1)),
        }
        for order in (1, 2):
            errs, noise = [], []
            for n in grid:
                sol = dmft.solve_dmft(X, y, steps=n, flow_order=order, throw=False, **kw)
                loss = np.asarray(sol.loss)[:: n // grid[0]]
                errs.append(float(np.max(np.abs(loss - ref[:: ref_steps // grid[0]]))))
                noise.append(float(np.max(np.asarray(sol.loss_error))))
            row[f"order{order}"] = dict(
                max_error=errs, max_mc_error=noise, slope=slope(1 / np.array(grid), errs)
            )
        row["seconds"] = time.perf_counter() - t0
        out[name] = row
        print(name, {k: v["slope"] for k, v in row.items() if k.startswith("order")}, flush=True)
    return out


def _successive(diffs, scale, times):
    """Seed-averaged successive differences (seeds, levels, times τ > 0) summarized per level:
    the mean and standard error at each τ, the maximum over τ with its standard error and z,
    and log2 of the ratio of successive maxima (slope per halving), absolute and relative to
    ``scale`` (e.g. the loss at each τ); the same at the last time alone (``*_final``)."""
    d = np.asarray(diffs)[:, :, 1:]
    seeds = d.shape[0]
    row = {}
    for kind, x in (("relative", d / scale[1:]), ("absolute", d)):
        mean = x.mean(0)
        sem = x.std(0, ddof=1) / np.sqrt(seeds) if seeds > 1 else np.zeros_like(mean)
        worst, k = np.abs(mean).max(1), np.abs(mean).argmax(1)
        at = sem[np.arange(len(k)), k]
        row[kind] = dict(
            mean_difference=mean.tolist(),
            sem=sem.tolist(),
            max_difference=worst.tolist(),
            sem_at_max=at.tolist(),
            z_at_max=(worst / np.where(at > 0, at, np.inf)).tolist(),
            tau_at_max=[times[i + 1] for i in k],
            slope_per_halving=np.log2(worst[:-1] / worst[1:]).tolist(),
            final_difference=mean[:, -1].tolist(),
            sem_final=sem[:, -1].tolist(),
            z_final=(np.abs(mean[:, -1]) / np.where(sem[:, -1] > 0, sem[:, -1], np.inf)).tolist(),
            slope_final_per_halving=np.log2(np.abs(mean[:-1, -1] / mean[1:, -1])).tolist(),
        )
    return row


def relu_flow_order(quick, seeds=None, samples=None, finest=None, first_seed=0, budget=None):
    """The ReLU flow's order with sampled sites: grids coupled through one fine solve.

    Setting: P = 1 with |x|² = 1/4, L = 2, γ₀ = 1, τ ≤ 2; the loss falls from 0.5 to about
    2e-3. (With |x|² = 1 it falls by seven decades, and the errors relative to the loss stay
    pre-asymptotic far past the grids affordable here: the exact linear network in that setting
    has relative order-2 slopes 0.24, 0.16, 1.01, 1.58 up to 512 steps. ``linear_reference``
    reports that metric for the exact linear solver in both settings, without sampling noise.)

    Each seed solves the finest grid (N steps) and gives every coarser grid (N/2 steps and
    fewer) the innovations that put its sources on the fine solve's paths
    (``dmft.monte_carlo.coarse_innovations``), so the grids differ mostly by their step errors.
    Only the coupled grids enter the differences: the fine solve itself draws its innovations as
    Sobol' points, and its finite-sample bias differs from theirs. Each grid is the march
    ``solve_dmft(..., dynamics="flow")`` runs (discrete time with η₀ = dτ), and the order-2
    value on grid n combines the predictions of grids n and 2n as the solver does,
    2·f(2n) − f(n), with the loss computed from them. The errors are the successive differences
    q(n) − q(2n) on the coarsest grid's times, averaged over seeds, with their standard errors
    over seeds; the slope per halving is log2 of the ratio of successive maxima over τ > 0,
    meaningful only where both maxima are well above their standard errors (``z_at_max``).
    What is left of the noise hardly falls with dτ (about a tenth of each grid's sampling error
    is not shared by the coupling), so the order-2 differences, which fall as dτ², sink under
    it from 32 steps with 32 seeds; 394 seeds with ``finest=256`` resolve them to 32 steps
    (docs/flow_and_depth.md).

    The order-2 prediction f(τ) is summarized the same way (``order2_prediction``, relative to
    the residual y − f), and every summary also gives the difference at τ = t_max alone
    (``*_final``). In the exact linear network (``linear_reference``) the prediction at t_max
    has slopes 1.79, 1.98, 2.00, … from the 8-step difference on, within 0.02 of 2 from the
    16-step one; the loss's maximum over τ has 2.74, 2.33, 2.16, …, within 0.2 only from 32.

    ``finest`` sets the fine solve's steps (the coupled grids are 8 … finest/2), ``first_seed``
    the first seed, and ``budget`` the seconds after which no new seed is started (the seeds
    done are summarized). A check compares the coupled order-2 losses on the two coarsest grids
    with ``solve_dmft``'s own (independent sources, at most 32 replicas) at the same size.
    """
    import jax.numpy as jnp

    from dmft.activations import get_activation
    from dmft.monte_carlo import coarse_innovations, solve_mc
    from dmft.network import input_kernel
    from dmft.solve import _loss

    t_max, depth, gamma0, x = 2.0, 2, 1.0, 0.5
    N, S, n_seeds = (64, 2**11, 2) if quick else (512, 2**14, 32)
    N, S, n_seeds = finest or N, samples or S, seeds or n_seeds
    if N < 64 or N & (N - 1):  # grids 8 … N/2: at least one order-2 difference
        raise ValueError(f"finest: a power of two of at least 64, got {N}")
    if n_seeds < 2 or S < 2:
        raise ValueError(f"seeds and samples: at least 2 each, got {n_seeds} and {S}")
    grid = [n for n in (8, 16, 32, 64, 128, 256) if n < N]  # the coupled grids
    X, y = np.full((1, 1), x), np.ones(1)
    Kx = input_kernel(jnp.asarray(X))
    rtol = float(np.sqrt(np.finfo(np.float64).eps)) ** 1.5
    static = dict(act=get_activation("relu"), depth=depth, alpha=0.5, momentum=0.0, samples=S,
                  rtol=rtol)  # fmt: skip

    @jax.jit
    def fine_solve(key):
        return solve_mc(Kx, y, jnp.ones((N, 1)), t_max / N, 1.0, gamma0, key, steps=N,
                        return_factors=True, **static)  # fmt: skip

    # one compiled solve per grid, the innovations derived outside it: with coarse_innovations
    # (QR, SVD) compiled into the march's program, XLA:CPU hung (512 steps, 16 384 sites)
    @partial(jax.jit, static_argnames="n")
    def coarse_solve(key, z, n):
        return solve_mc(Kx, y, jnp.ones((n, 1)), t_max / n, 1.0, gamma0, key, steps=n,
                        innovations=z, **static)["f"]  # fmt: skip

    def coarse_solves(key, fine):
        f = {}
        for n in grid:
            z = [coarse_innovations(fine[F], fine[zz], N // n)
                 for F, zz in (("Fp", "zu"), ("Fg", "zr"))]  # fmt: skip
            f[n] = np.asarray(coarse_solve(key, z, n))
        return f

    loss = lambda f: np.asarray(_loss(y, f, jnp.float64))  # noqa: E731
    c = grid[0]
    on_c = lambda v, n: v[:: n // c]  # noqa: E731
    first, second, second_f, coupled, best, best_f = [], [], [], [], [], []
    t0 = time.perf_counter()
    for seed in range(first_seed, first_seed + n_seeds):
        if budget is not None and len(first) >= 2 and time.perf_counter() - t0 > budget:
            break  # the time budget is spent: summarize the seeds done
        key = jax.random.PRNGKey(seed)
        f = coarse_solves(key, fine_solve(key))
        f2 = {n: 2 * f[2 * n][::2] - f[n] for n in grid[:-1]}  # order-2 predictions
        order2 = {n: loss(f2[n]) for n in grid[:-1]}
        first.append([on_c(loss(f[n]) - loss(f[2 * n][::2]), n) for n in grid[:-1]])
        second.append([on_c(order2[n] - order2[2 * n][::2], n) for n in grid[:-2]])
        second_f.append([on_c(f2[n] - f2[2 * n][::2], n)[:, 0] for n in grid[:-2]])
        coupled.append([order2[n] for n in grid[:2]])
        best.append(on_c(order2[grid[-2]], grid[-2]))
        best_f.append(on_c(f2[grid[-2]], grid[-2])[:, 0])
        print(f"  seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    n_seeds = len(first)
    scale = np.mean(best, axis=0)  # the loss on the coarsest grid's times
    times = list(np.linspace(0, t_max, c + 1))
    out = dict(input_norm_squared=x * x, t_max=t_max, depth=depth, gamma0=gamma0,
               finest_steps=N, samples=S, seeds=n_seeds, first_seed=first_seed,
               seconds=time.perf_counter() - t0, times=times, loss=scale.tolist())  # fmt: skip
    # the order-2 prediction f(τ) too: relative to the residual y − f
    residual = y[0] - np.mean(best_f, axis=0)
    for name, diffs, sc in (("order1", first, scale), ("order2", second, scale),
                            ("order2_prediction", second_f, residual)):  # fmt: skip
        out[name] = dict(steps=grid[: len(diffs[0])], **_successive(diffs, sc, times))
        for kind in ("absolute", "relative"):
            r = out[name][kind]
            print(f"relu flow {name} {kind}: max |q(n) - q(2n)|", np.round(r["max_difference"], 8).tolist(),
                  "z", np.round(r["z_at_max"], 1).tolist(), "slopes",
                  np.round(r["slope_per_halving"], 2).tolist(), "| at t_max:",
                  np.round(r["final_difference"], 8).tolist(), "z",
                  np.round(r["z_final"], 1).tolist(), "slopes",
                  np.round(r["slope_final_per_halving"], 2).tolist(), flush=True)  # fmt: skip
    # the coupled grids against solve_dmft's own solves at the two coarsest sizes
    check = []
    for i, n in enumerate(grid[:2]):
        sol = dmft.solve_dmft(X, y, depth=depth, activation="relu", gamma0=gamma0, dynamics="flow",
                              t_max=t_max, steps=n, samples=S, replicas=min(n_seeds, 32), seed=100,
                              memory_limit=16 * 2**30, throw=False)  # fmt: skip
        ref, err = np.asarray(sol.loss), np.asarray(sol.loss_error)
        mine = np.array([c_[i] for c_ in coupled])
        m, e = mine.mean(0), mine.std(0, ddof=1) / np.sqrt(n_seeds)
        z = np.abs(m - ref)[1:] / np.hypot(e, err)[1:]
        check.append(dict(steps=n, solver_loss=ref.tolist(), solver_error=err.tolist(),
                          coupled_loss=m.tolist(), coupled_sem=e.tolist(), max_z=float(z.max())))  # fmt: skip
        print("relu flow: coupled grids against solve_dmft, steps", n, "max|z|", round(z.max(), 2))
    out["solver_check"] = check
    # the same metric for the exact linear network (no sampling), in this setting and at |x|² = 1
    out["linear_reference"] = {}
    lin_grid = [8, 16, 32, 64] if quick else [8, 16, 32, 64, 128, 256, 512]
    for xs in (x, 1.0):
        kw = dict(depth=depth, activation="linear", gamma0=gamma0, dynamics="flow", t_max=t_max,
                  throw=False)  # fmt: skip
        row = {"input_norm_squared": xs * xs, "steps": lin_grid}
        q, fq = {}, {}
        for order in (1, 2):
            sols = {n: dmft.solve_dmft(np.full((1, 1), xs), y, steps=n, flow_order=order, **kw)
                    for n in lin_grid}  # fmt: skip
            q[order] = {n: on_c(np.asarray(s.loss), n) for n, s in sols.items()}
            fq[order] = {n: on_c(np.asarray(s.predictions)[:, 0], n) for n, s in sols.items()}
        ref, ref_f = q[2][lin_grid[-1]], fq[2][lin_grid[-1]]
        for name, qq, sc in (("order1", q[1], ref), ("order2", q[2], ref),
                             ("order2_prediction", fq[2], y[0] - ref_f)):  # fmt: skip
            diffs = [[qq[n] - qq[2 * n] for n in lin_grid[:-1]]]
            row[name] = r = _successive(diffs, sc, times)
            print(f"linear |x|^2={xs * xs} {name} slopes (absolute, relative; at t_max):",
                  np.round(r["absolute"]["slope_per_halving"], 2).tolist(),
                  np.round(r["relative"]["slope_per_halving"], 2).tolist(),
                  np.round(r["absolute"]["slope_final_per_halving"], 2).tolist())  # fmt: skip
        out["linear_reference"][f"input_norm_squared={xs * xs}"] = row
    return out


def gd_to_flow(quick):
    kw = dict(depth=4, activation="linear", gamma0=1.0)
    t_max = 0.25
    flow = np.asarray(dmft.solve_dmft(*ONE, dynamics="flow", t_max=t_max, steps=256, **kw).loss)
    grid = (8, 16) if quick else (8, 16, 32, 64, 128)
    errs = []
    for n in grid:
        gd = np.asarray(dmft.solve_dmft(*ONE, eta0=t_max / n, steps=n, **kw).loss)
        errs.append(float(np.max(np.abs(gd - flow[:: 256 // n]))))
    out = dict(
        eta0=[t_max / n for n in grid], max_error=errs, slope=slope(1 / np.array(grid), errs)
    )
    print("gd → flow slope", out["slope"], flush=True)
    return out


def depth_rates(quick):
    out = {}
    specs = [
        (
            "linear P=1",
            ONE,
            dict(activation="linear", gamma0=1.0, eta0=0.02, steps=5),
            (4, 8, 16) if quick else (4, 8, 16, 32, 64, 128),
        ),
        (
            "relu P=4",
            data(4),
            dict(
                activation="relu",
                gamma0=1.0,
                eta0=0.5,
                steps=5,
                samples=2**12 if quick else 2**16,
                replicas=2 if quick else 16,
                memory_limit=16 * 2**30,
            ),
            (2, 4, 8) if quick else (4, 8, 16, 32),
        ),
    ]
    for name, (X, y), kw, ladder in specs:
        t0 = time.perf_counter()
        inf = dmft.solve_dmft(X, y, depth=math.inf, depths=ladder, throw=False, **kw)
        row = {"depths": list(ladder), "seconds": None}
        for field in ("loss", "ntk"):
            per = np.array([np.asarray(getattr(s, field))[-1].ravel()[0] for s in inf.ladder])
            lim = float(np.asarray(getattr(inf, field))[-1].ravel()[0])
            gaps = np.abs(per - lim)
            succ = np.abs(np.diff(per))
            Ls = np.array(ladder)
            use = slice(0, len(ladder) - 1)  # the deepest point is nearly the limit itself
            late = slice(1, len(ladder) - 1)  # from the second depth on: past the 1/L² part
            row[field] = dict(
                per_depth=per.tolist(),
                limit=lim,
                gaps=gaps.tolist(),
                slope=slope(Ls[use], gaps[use]),
                slope_from_second=slope(Ls[late], gaps[late]),
                successive=succ.tolist(),
                successive_slope=slope(Ls[:-1], succ),
                successive_slope_from_second=slope(Ls[1:-1], succ[1:]),
            )
        if inf.method == "monte-carlo":
            row["loss_mc_error_per_depth"] = [
                float(np.asarray(s.loss_error)[-1]) for s in inf.ladder
            ]
        row["depth_error"] = float(np.asarray(inf.depth_error)[-1])
        row["seconds"] = time.perf_counter() - t0
        out[name] = row
        for f in ("loss", "ntk"):
            r = row[f]
            print(name, f, {k: round(v, 3) for k, v in r.items() if "slope" in k}, flush=True)
    # lazy closed form K_∞ = (2 + β₀²)e^{β₀²}
    lazy = dmft.solve_dmft(*ONE, depth=math.inf, activation="linear", gamma0=1e-4, steps=1)
    out["lazy_K_inf_rel_error"] = float(abs(lazy.ntk[0, 0, 0] / (3 * math.e) - 1))
    print("lazy K_inf rel error", out["lazy_K_inf_rel_error"])
    return out


def ladder_cost(quick):
    out = {}
    specs = [
        ("linear P=1 T=50", ONE, dict(activation="linear", eta0=0.02, steps=10 if quick else 50)),
        (
            "relu P=8 T=20",
            data(8),
            dict(
                activation="relu",
                eta0=0.5,
                steps=5 if quick else 20,
                samples=8192,
                dtype="float32",
                tol=1.0,
            ),
        ),
    ]
    ladder = (2, 4, 8) if quick else (4, 8, 16, 32)
    for name, (X, y), kw in specs:
        row = {}
        for label, extra in (
            ("ladder", dict(depth=math.inf, depths=ladder)),
            ("deepest", dict(depth=ladder[-1])),
        ):
            times = []
            jax.clear_caches()  # the first call compiles from scratch for both
            for g in (1.0, 0.9):
                t0 = time.perf_counter()
                jax.block_until_ready(dmft.solve_dmft(X, y, gamma0=g, **kw, **extra).loss)
                times.append(time.perf_counter() - t0)
            row[label] = dict(first_s=times[0], second_s=times[1])
        row["ratio_compiled"] = row["ladder"]["second_s"] / row["deepest"]["second_s"]
        row["ratio_first"] = row["ladder"]["first_s"] / row["deepest"]["first_s"]
        out[name] = row
        print(name, row, flush=True)
    return out


def alpha_figure(quick, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = (2, 4, 8, 16) if quick else (2, 4, 8, 16, 32, 64)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    out = {}
    for alpha, color in ((0.5, "C0"), (1.0, "C3")):
        lazy, final = [], []
        for L in depths:
            lz = dmft.solve_dmft(
                *ONE, depth=L, activation="linear", gamma0=1e-4, steps=1, alpha=alpha
            )
            lazy.append(float(lz.ntk[0, 0, 0]))
            rich = dmft.solve_dmft(
                *ONE, depth=L, activation="linear", gamma0=1.0, eta0=0.02, steps=20, alpha=alpha
            )
            final.append(float(rich.loss[-1]))
            if L in (depths[0], depths[-1]):
                axes[2].semilogy(
                    np.asarray(rich.loss),
                    color=color,
                    ls="-" if L == depths[-1] else ":",
                    label=f"α = {alpha:g}, L = {L}",
                )
        out[f"alpha={alpha:g}"] = dict(depths=list(depths), lazy_ntk=lazy, final_loss=final)
        inv = 1 / np.array(depths)
        axes[0].plot(inv, lazy, "o-", color=color, label=f"α = {alpha:g}")
        axes[1].plot(inv, final, "o-", color=color, label=f"α = {alpha:g}")
    axes[0].axhline(3 * math.e, color="C0", ls="--", lw=0.8)
    axes[0].axhline(3.0, color="C3", ls="--", lw=0.8)
    axes[0].set(xlabel="1/L", ylabel="NTK at init", title="lazy NTK (dashed: L = ∞ closed forms)")
    axes[1].set(
        xlabel="1/L", ylabel="loss at step 20", title="rich (γ₀ = 1), η₀ = 0.02", yscale="log"
    )
    axes[2].set(xlabel="step", ylabel="loss", title="training loss")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    print("wrote", path)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="one section")
    ap.add_argument("--out", default="benchmarks/results/flow_depth_orders.json")
    ap.add_argument("--figure", default="docs/figures/alpha_limits.png")
    ap.add_argument(
        "--relu-seeds",
        type=int,
        default=None,
        help="relu_flow_order: seeds (default 32; 2 with --quick)",
    )
    ap.add_argument(
        "--relu-samples",
        type=int,
        default=None,
        help="relu_flow_order: sites per seed (default 16384; 2048 with --quick)",
    )
    ap.add_argument(
        "--relu-finest",
        type=int,
        default=None,
        help="relu_flow_order: steps of the fine solve; the coupled grids are 8 … half of it "
        "(default 512; 64 with --quick)",
    )
    ap.add_argument(
        "--relu-first-seed", type=int, default=0, help="relu_flow_order: first seed (default 0)"
    )
    ap.add_argument(
        "--relu-budget",
        type=float,
        default=None,
        help="relu_flow_order: seconds after which no new seed is started (default: no limit)",
    )
    args = ap.parse_args()
    report = {}
    sections = dict(
        flow_order=flow_order,
        relu_flow_order=lambda quick: relu_flow_order(
            quick,
            args.relu_seeds,
            args.relu_samples,
            args.relu_finest,
            args.relu_first_seed,
            args.relu_budget,
        ),
        gd_to_flow=gd_to_flow,
        depth=depth_rates,
        ladder_cost=ladder_cost,
    )
    for name, fn in sections.items():
        if args.only in (None, name):
            report[name] = fn(args.quick)
            write_json(args.out, report)
    if args.only in (None, "alpha"):
        report["alpha"] = alpha_figure(args.quick, args.figure)
    write_json(args.out, report)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
