"""Wall time to a 1%-accurate loss curve: DMFT solver versus simulated ensembles + 1/N fit.

Setting (issue #3, 7a): P = 8 random inputs, L = 8, 50 GD steps, γ₀ = 1, η₀ = 0.1, linear and
ReLU. "1% accurate" means a standard error of at most 1% of the loss at every step:

- linear DMFT: the exact path (no sampling error);
- ReLU DMFT: Monte Carlo; a pilot of 16 replicas at ``samples=4096`` measures the relative
  error e₀ of their mean, then ``samples = 4096·(16/4)·(e₀/0.01)²`` per replica (the solve's
  default 4 replicas; sampling error falls as S^−1/2) is solved and timed. A pilot of 4
  replicas, as before, gave too low an error (4.1% against 5.6% from 32 replicas × 8192 sites,
  scaled): a standard error from 3 degrees of freedom, maximized over 50 steps, is biased low;
- networks: centred ensembles at N = 128, 256, 512 fitted by weighted least squares in 1/N; a
  pilot of 16 seeds per width measures the relative standard error of the intercept e₀, then
  ``16·(e₀/0.01)²`` seeds per width are needed (the fit's bias is not counted, which favours
  the networks).

Runs above 512 seeds per width or 65536 samples per replica are timed at that cap and the time
is scaled linearly to the size needed (both costs are linear in it); the JSON keeps both.

Every timed run is a second call (compiled already), on the same machine, one after the other.
Part (7c): the memory estimate reported before a ReLU solve at P = 16, L = 16, 100 steps, and
the measured peak of that solve (``--big``; minutes on a 2-core CPU).

    python benchmarks/bench_solve_vs_networks.py [--quick] [--big]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import jax
import numpy as np

import dmft

sys.path.insert(0, os.path.dirname(__file__))
from _results import write_json  # noqa: E402
from validate_solver import data, extrapolate  # noqa: E402

TARGET = 0.01
PILOT_REPLICAS = 16  # the pilot's error estimate needs many replicas (see above)
REPLICAS = 4  # the timed solve's (solve_dmft's default)
MAX_SEEDS = 512  # per width; beyond it the time is projected linearly in seeds
MAX_SAMPLES = 65536  # per replica; beyond it the time is projected linearly in samples
# a ReLU solve at the cap (P = 8, L = 8, 50 steps) needs about 10.5 GiB, over the solver's
# default 8 GiB limit: this benchmark wants a machine with 16 GiB
MEMORY_LIMIT = 16 * 2**30


def timed(fn):
    fn()  # compile
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.loss)
    return out, time.perf_counter() - t


def worst_rel(loss, err):
    loss, err = np.asarray(loss)[1:], np.asarray(err)[1:]
    return float(np.max(err / loss))


def networks(X, y, kw, widths, seeds):
    means, ses = [], []
    t = time.perf_counter()
    for n in widths:
        res = dmft.simulate(X, y, width=n, seeds=seeds, center=True, seed=5, **kw)
        means.append(res.mean())
        ses.append(res.stderr())
    elapsed = time.perf_counter() - t
    ext, se = extrapolate(widths, np.array(means), np.array(ses))
    return ext, se, elapsed


def compare(activation, steps, widths, pilot_seeds, pilot_samples, dtype):
    X, y = data(8)
    kw = dict(depth=8, activation=activation, gamma0=1.0, eta0=0.1, steps=steps)
    row = dict(activation=activation, steps=steps, widths=widths, dtype=dtype)
    if activation == "linear":
        sol, t_dmft = timed(lambda: dmft.solve_dmft(X, y, dtype=dtype, **kw))
        row.update(dmft_seconds=t_dmft, dmft_rel_error=0.0, method=sol.method)
    else:
        mc = dict(kw, memory_limit=MEMORY_LIMIT, throw=False, dtype=dtype)
        pilot = dmft.solve_dmft(X, y, samples=pilot_samples, replicas=PILOT_REPLICAS, **mc)
        e0 = worst_rel(pilot.loss, pilot.loss_error)
        sites = pilot_samples * PILOT_REPLICAS * (e0 / TARGET) ** 2  # over all replicas
        needed = int(np.ceil(sites / REPLICAS / 256) * 256)
        samples = min(max(needed, pilot_samples), MAX_SAMPLES)
        sol, t_dmft = timed(lambda: dmft.solve_dmft(X, y, samples=samples, replicas=REPLICAS, **mc))
        row.update(
            dmft_seconds=t_dmft * max(needed, samples) / samples,
            dmft_measured_seconds=t_dmft,
            dmft_samples=samples,
            dmft_samples_needed=needed,
            dmft_pilot_rel_error=e0,
            dmft_rel_error=worst_rel(sol.loss, sol.loss_error),
            method=sol.method,
        )
    networks(X, y, kw, widths, 2)  # compile every width
    ext, se, _ = networks(X, y, kw, widths, pilot_seeds)
    e0 = float(np.max(se[1:] / ext[1:]))
    needed = int(np.ceil(pilot_seeds * (e0 / TARGET) ** 2))
    seeds = min(needed, MAX_SEEDS)
    networks(X, y, kw, widths, seeds)  # same shapes compiled before timing
    ext, se, t_net = networks(X, y, kw, widths, seeds)
    t_needed = t_net * max(needed, seeds) / seeds  # projected to the seeds needed
    row.update(
        network_seeds=seeds,
        network_seeds_needed=needed,
        network_measured_seconds=t_net,
        network_seconds=t_needed,
        network_rel_error=float(np.max(se[1:] / ext[1:])),
        speedup=t_needed / row["dmft_seconds"],  # both projected
        max_rel_diff=float(np.max(np.abs(np.asarray(sol.loss)[1:] / ext[1:] - 1))),
    )
    return row


def big(dtype, samples):
    X, y = data(16)
    kw = dict(depth=16, activation="relu", gamma0=1.0, eta0=0.1, steps=100, samples=samples)
    t = time.perf_counter()
    sol = dmft.solve_dmft(X, y, replicas=2, throw=False, dtype=dtype, **kw)
    jax.block_until_ready(sol.loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(
        points=16,
        depth=16,
        steps=100,
        samples=samples,
        dtype=dtype,
        memory_estimate_gib=sol.memory_estimate / 2**30,
        peak_rss_gib=peak / 2**30,
        seconds=time.perf_counter() - t,
        final_loss=float(sol.loss[-1]),
        rel_error=worst_rel(sol.loss, sol.loss_error),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--big", action="store_true", help="only the P=16, L=16, T=100 memory run")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", choices=("linear", "relu"), help="one activation's row")
    args = ap.parse_args()
    acts = [a for a in ("linear", "relu") if args.only in (None, a)]
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    report = dict(device=str(jax.devices()[0]), jax=jax.__version__, load_avg=os.getloadavg())
    if args.big:
        report["big"] = big(args.dtype, 4096)
        print(report["big"])
        out = args.out or "benchmarks/results/solve_relu_big.json"
    else:
        if args.quick:
            rows = [compare(a, 5, [64, 128], 4, 1024, args.dtype) for a in acts]
        else:
            rows = [compare(a, 50, [128, 256, 512], 16, 4096, args.dtype) for a in acts]
        for r in rows:
            print(
                f"{r['activation']:6s}: DMFT {r['dmft_seconds']:.2f}s (rel err "
                f"{r['dmft_rel_error']:.2%}, samples {r.get('dmft_samples_needed', 0)})  "
                f"networks {r['network_seconds']:.2f}s ({r['network_seeds_needed']} seeds/width "
                f"needed, rel err {r['network_rel_error']:.2%} at {r['network_seeds']})  "
                f"speedup {r['speedup']:.1f}x  max |DMFT/networks − 1| {r['max_rel_diff']:.2%}",
                flush=True,
            )
        report["cases"] = rows
        out = args.out or "benchmarks/results/solve_vs_networks.json"
    if args.quick:
        return
    write_json(out, report)
    print("wrote", out)


if __name__ == "__main__":
    main()
