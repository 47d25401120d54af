"""Monte Carlo error of ``solve_dmft`` against the number of sites S.

With pseudo-random sources (``sampling="random"``) it must fall as S^−1/2; with the default
Sobol' sources (randomized quasi-Monte Carlo) it may fall faster, and the script reports how
fast. For each sampling, two measurements, each a least-squares slope of log(error) on log(S):

- linear network, one point, L = 4, γ₀ = 1: the root-mean-square deviation of the Monte Carlo
  loss from the exact linear path, over independent seeds (truth known, so bias would show);
- ReLU, P = 8, L = 4, γ₀ = 1: the spread of the loss over independent seeds.

Both at the last step and averaged over steps 1..T (root mean square over steps).

    python benchmarks/mc_error_scaling.py            # S = 1k … 16k, 24 seeds (about 20 min)
    python benchmarks/mc_error_scaling.py --sampling sobol   # one of the two
    python benchmarks/mc_error_scaling.py --quick
"""

from __future__ import annotations

import argparse
import itertools

import jax
import numpy as np
from _results import write_json  # noqa: E402

import dmft

jax.config.update("jax_enable_x64", True)


def slope(S, err):
    return float(np.polyfit(np.log(S), np.log(err), 1)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sampling", choices=("random", "sobol"), action="append",
                    help="the sources measured (repeatable; default both)")  # fmt: skip
    ap.add_argument("--out", default="benchmarks/results/mc_error_scaling.json")
    args = ap.parse_args()
    sizes = [1024, 4096] if args.quick else [1024, 2048, 4096, 8192, 16384]
    seeds = 4 if args.quick else 24
    T = 4 if args.quick else 8

    one = (np.ones((1, 1)), np.ones(1))
    lin = dict(depth=4, activation="linear", gamma0=1.0, eta0=0.05, steps=T)
    exact = np.asarray(dmft.solve_dmft(*one, **lin).loss)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 16))
    y = np.sign(X[:, 0])
    relu = dict(depth=4, activation="relu", gamma0=1.0, eta0=0.5, steps=T)

    samplings = args.sampling or ["random", "sobol"]
    out = dict(sizes=sizes, seeds=seeds, steps=T)
    cases = dict(linear=(one, lin, exact), relu=((X, y), relu, None))
    for sampling, (name, (data, kw, ref)) in itertools.product(samplings, cases.items()):
        last, avg, reported = [], [], []
        for S in sizes:
            losses, errs = [], []
            for seed in range(seeds):
                sol = dmft.solve_dmft(
                    *data,
                    method="monte-carlo",
                    samples=S,
                    replicas=4,
                    seed=seed,
                    sampling=sampling,
                    throw=False,
                    **kw,
                )
                losses.append(np.asarray(sol.loss))
                errs.append(np.asarray(sol.loss_error))
            losses = np.array(losses)[:, 1:]
            dev = losses - (ref[1:] if ref is not None else losses.mean(0))
            ddof = 0 if ref is not None else 1
            rms = np.sqrt(np.sum(dev**2, axis=0) / (seeds - ddof))  # per step
            last.append(rms[-1])
            avg.append(np.sqrt(np.mean(rms**2)))
            reported.append(np.mean(np.array(errs)[:, -1]))
            print(
                f"{sampling:6s} {name:6s} S={S:6d}  rms(last)={rms[-1]:.3e}  "
                f"rms(all)={avg[-1]:.3e}",
                flush=True,
            )
        out[f"{name}_{sampling}"] = res = dict(
            rms_last=last,
            rms_all=avg,
            reported_last=reported,
            slope_last=slope(sizes, last),
            slope_all=slope(sizes, avg),
            slope_reported=slope(sizes, reported),
        )
        print(
            f"{sampling} {name}: slope last {res['slope_last']:.3f}, all steps "
            f"{res['slope_all']:.3f}, reported error {res['slope_reported']:.3f}"
        )
    write_json(args.out, out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
