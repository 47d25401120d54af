"""Validate ``solve_dmft`` against ensembles of real networks extrapolated in 1/N.

For each setting: train ``seeds`` centred networks at several widths with ``dmft.simulate``, fit
the mean loss at each step by weighted least squares in 1/N (``a + b/N``), and compare the
intercept with the DMFT loss. The agreement statistic is

    z(t) = (DMFT(t) − extrapolated(t)) / sqrt(SE_extrapolated(t)² + SE_MonteCarlo(t)²)

and a setting passes when max_t |z(t)| < 3. The large-η₀ setting also checks the NTK-Euler
prediction built from the solver's own NTK, ``Δ(t+1) = (I − η₀K(t)/P) Δ(t)``, which is only first
order in η₀ and must fail there.

Depth-8 full-batch cases also solve without the response terms (``responses=False``, the
ablation of SPEC §3) and compare that with the same networks.

    python benchmarks/validate_solver.py                 # full grid (about 25 min on 2 cores)
    python benchmarks/validate_solver.py --quick         # a small smoke run
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from _results import write_json  # noqa: E402

import dmft
from dmft.convergence import inverse_width_intercept


def data(P, D=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, D))
    X *= np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)
    y = np.sign(X[:, 0] + 0.5 * X[:, 1])
    return X, y


def extrapolate(widths, means, ses):
    """Weighted least squares of the mean on 1/N per step: intercept and its standard error."""
    return inverse_width_intercept(widths, means, ses)


def euler_loss(sol, y, eta0):
    K = np.asarray(sol.ntk)
    d = np.asarray(y, float).copy()
    out = [0.5 * np.mean(d**2)]
    for t in range(K.shape[0] - 1):
        d = d - eta0 * K[t] @ d / len(d)
        out.append(0.5 * np.mean(d**2))
    return np.array(out)


def run_case(name, X, y, kw, widths, seeds, samples, replicas, ablation=False):
    t0 = time.perf_counter()
    sol = dmft.solve_dmft(X, y, samples=samples, replicas=replicas, throw=False, **kw)
    t_solve = time.perf_counter() - t0
    means, ses = [], []
    t0 = time.perf_counter()
    for n in widths:
        res = dmft.simulate(X, y, width=int(n), seeds=seeds, center=True, seed=11, **kw)
        means.append(res.mean())
        ses.append(res.stderr())
    t_sim = time.perf_counter() - t0
    ext, ext_se = extrapolate(widths, np.array(means), np.array(ses))
    loss = np.asarray(sol.loss)
    mc_se = np.asarray(sol.loss_error)
    comb = np.sqrt(ext_se**2 + mc_se**2)
    z = (loss - ext)[1:] / comb[1:]
    row = dict(
        name=name,
        settings={k: v for k, v in kw.items()},
        method=sol.method,
        dmft=loss.tolist(),
        dmft_se=mc_se.tolist(),
        networks=ext.tolist(),
        networks_se=ext_se.tolist(),
        widest=np.array(means)[-1].tolist(),
        max_abs_z=float(np.max(np.abs(z))),
        max_rel_diff=float(np.max(np.abs(loss / ext - 1))),
        max_rel_mc_error=float(np.max(mc_se[1:] / np.abs(loss[1:]))),
        passed=bool(np.max(np.abs(z)) < 3),
        seconds_solver=t_solve,
        seconds_networks=t_sim,
    )
    if kw.get("batch_size") is None and kw.get("momentum", 0.0) == 0.0:
        eu = euler_loss(sol, y, kw["eta0"])
        ze = (eu - ext)[1:] / comb[1:]
        row.update(euler=eu.tolist(), euler_max_abs_z=float(np.max(np.abs(ze))))
    if ablation:  # the response ablation of SPEC §3 against the same networks
        abl = dmft.solve_dmft(
            X, y, samples=samples, replicas=replicas, responses=False, throw=False, **kw
        )
        la, sa = np.asarray(abl.loss), np.asarray(abl.loss_error)
        za = (la - ext)[1:] / np.sqrt(ext_se**2 + sa**2)[1:]
        row.update(
            ablated=la.tolist(), ablated_se=sa.tolist(), ablated_max_abs_z=float(np.max(np.abs(za)))
        )
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for CI")
    ap.add_argument("--out", default="benchmarks/results/validate_solver.json")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)

    if args.quick:
        widths, seeds, steps, samples, replicas = [128, 256], 16, 4, 4096, 2
        grid = [("relu", 4, 1.0)]
    else:
        widths, seeds, steps, samples, replicas = [256, 512, 1024], 64, 20, 16384, 4
        grid = [(a, L, g) for a in ("relu", "tanh") for L in (4, 8) for g in (1.0, 2.0)]
    X, y = data(8)
    one = (np.ones((1, 1)), np.ones(1))
    cases = []
    if not args.quick:  # linear, one point: the exact path (no Monte Carlo error)
        for L in (2, 8):
            for g in (0.5, 2.0):
                kw = dict(depth=L, activation="linear", gamma0=g, eta0=0.05, steps=steps)
                cases.append((f"linear P=1 L={L} γ₀={g}", kw, one))
    for act, L, g in grid:
        # η₀ = 0.5 at γ₀ = 1; at γ₀ = 2 the kernel grows enough that 0.5 reaches the edge of
        # stability (loss spikes), so γ₀ = 2 uses 0.25
        kw = dict(depth=L, activation=act, gamma0=g, eta0=0.5 / g, steps=steps)
        cases.append((f"{act} L={L} γ₀={g}", kw, (X, y)))
    if not args.quick:
        base = dict(depth=4, activation="relu", gamma0=1.0, steps=steps)
        cases += [
            ("relu L=4 γ₀=1 SGD batch 4", dict(base, eta0=0.5, batch_size=4, batch_seed=2), (X, y)),
            ("relu L=4 γ₀=1 momentum 0.8", dict(base, eta0=0.2, momentum=0.8), (X, y)),
            ("relu L=4 γ₀=1 large η₀ = 1", dict(base, eta0=1.0, steps=10), (X, y)),
            ("relu L=4 γ₀=1 catapult η₀ = 2", dict(base, eta0=2.0, steps=10), (X, y)),
        ]
    if args.only:
        cases = [c for c in cases if args.only in c[0]]
    rows = []
    for name, kw, (Xc, yc) in cases:
        ablation = not args.quick and "SGD" not in name and "momentum" not in name
        ablation = ablation and "η₀" not in name and kw["depth"] == 8
        row = run_case(name, Xc, yc, kw, widths, seeds, samples, replicas, ablation)
        rows.append(row)
        eu = f", NTK-Euler max|z| {row['euler_max_abs_z']:.1f}" if "euler" in row else ""
        if "ablated" in row:
            eu += f", no-response max|z| {row['ablated_max_abs_z']:.1f}"
        print(
            f"{name:32s} max|z| {row['max_abs_z']:.2f}  max rel diff {row['max_rel_diff']:.3%}"
            f"  solver {row['seconds_solver']:.1f}s  networks {row['seconds_networks']:.1f}s{eu}",
            flush=True,
        )
    payload = dict(widths=widths, seeds=seeds, samples=samples, replicas=replicas, cases=rows)
    write_json(args.out, payload)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
