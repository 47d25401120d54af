"""FLOP rate of the Monte Carlo solver's contractions against this machine's matmul rate.

At every step and layer the Monte Carlo march (``dmft.monte_carlo``) does 14 products of a
site array (Mk times × S sites, stored sites last; Mk the width of the current time segment)
with a block of P rows: averages ``A xᵀ/S`` (Mk×S)@(S×P) and combinations ``C A``
(P×Mk)@(Mk×S), four in each
sweep's Gram–Schmidt, plus sources, responses joined with memory terms; two more per step for
h¹, the last layer's kernel row and g¹; and 4 products of a P × Mk row with an Mk × Mk whitening
factor (kernel rows and memory coefficients). Everything else (eigendecompositions of P×P blocks,
element-wise maps, O(S·P²) products) is a small fraction. This script counts those
multiply-adds exactly for the segment widths the solver uses and divides by the wall time of a
steady-state solve (second call, two replicas, float32): a lower bound on the rate of the
contractions themselves, since the wall time includes everything else.

Reported next to it, measured in the same process:
- the square float32 matmul rate (n = 2048), the machine's reference FLOP rate;
- the same two skinny products alone at the solver's shapes (what they reach when nothing else
  runs), and the memory bandwidth of a read (sum of a large array): the skinny products do
  2P flops per 4-byte element read, so at small P they are bound by bandwidth, not arithmetic.

    python benchmarks/bench_mc_flops.py [--small] [--out results/mc_flops.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _results import write_json  # noqa: E402

SEGMENTS = 4  # dmft.monte_carlo.solve_mc's default


def march_macs(P: int, L: int, T: int, S: int, segments: int = SEGMENTS) -> int:
    """Multiply-adds of the S×Mk-sized products of one Monte Carlo replica."""
    n_seg = min(segments, T + 1)
    bounds = [round((T + 1) * k / n_seg) for k in range(n_seg + 1)]
    total = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        Mk = hi * P
        per_step = (14 * L + 2) * P * S * Mk + 2 * S * Mk  # + h¹ and w (vector products)
        per_step += 4 * L * P * Mk * Mk  # rows times whitening factors
        total += (hi - lo) * per_step
    return total


def median_time(fn, *args, repeats=5):
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def machine_rates(P: int, S: int, M: int) -> dict:
    import jax
    import jax.numpy as jnp

    k = jax.random.split(jax.random.PRNGKey(0), 4)
    n = 2048
    A = jax.random.normal(k[0], (n, n), jnp.float32)
    # the solver's layout: sites last, a trajectory (M, S) and a field (P, S)
    B = jax.random.normal(k[1], (M, S), jnp.float32)
    x = jax.random.normal(k[2], (P, S), jnp.float32)
    C = jax.random.normal(k[3], (P, M), jnp.float32)
    big = jnp.ones((64 * 2**20,), jnp.float32)  # 256 MiB
    square = median_time(jax.jit(jnp.dot), A, A)
    proj = median_time(jax.jit(lambda x, B: B @ x.T), x, B)  # E[x Bᵀ] as an (M, P) result
    comb = median_time(jax.jit(lambda B, C: C @ B), B, C)
    read = median_time(jax.jit(jnp.sum), big)
    return {
        "square_2048_gflops": 2 * n**3 / square / 1e9,
        f"B_xT_{M}x{S}x{P}_gflops": 2 * P * S * M / proj / 1e9,
        f"C_B_{P}x{M}x{S}_gflops": 2 * P * S * M / comb / 1e9,
        "read_bandwidth_gb_s": big.size * 4 / read / 1e9,
    }


def solve_rate(P: int, L: int, T: int, S: int) -> dict:
    import jax

    import dmft

    X = np.random.default_rng(0).normal(size=(P, 5))
    y = np.sign(np.random.default_rng(1).normal(size=P))
    kw = dict(depth=L, activation="relu", eta0=0.3, steps=T, samples=S, replicas=2)
    kw.update(throw=False, dtype="float32", progress=False)
    t0 = time.perf_counter()
    jax.block_until_ready(dmft.solve_dmft(X, y, **kw).loss)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(dmft.solve_dmft(X, y, **kw).loss)
    wall = time.perf_counter() - t0
    flops = 2 * 2 * march_macs(P, L, T, S)  # two replicas
    return {"P": P, "L": L, "T": T, "S": S, "first_s": first, "second_s": wall,
            "contraction_flops": flops, "gflops": flops / wall / 1e9}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.small:
        sizes = [(4, 2, 6, 2048), (8, 2, 4, 2048)]
    else:
        sizes = [(8, 8, 30, 16384), (16, 8, 20, 16384), (32, 4, 12, 16384)]
    rows = []
    for P, L, T, S in sizes:
        M = (T + 1) * P
        rates = machine_rates(P, S, M)
        row = {**solve_rate(P, L, T, S), "machine": rates}
        square = rates["square_2048_gflops"]
        row["fraction_of_square"] = row["gflops"] / square
        rows.append(row)
        print(
            f"P={P} L={L} T={T} S={S}: solver contractions {row['gflops']:.1f} GFLOP/s "
            f"= {row['fraction_of_square']:.0%} of square matmul {square:.0f} GFLOP/s "
            f"(second call {row['second_s']:.2f} s); alone at M={M}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in rates.items() if k != "square_2048_gflops"),
            flush=True,
        )
    if args.out:
        write_json(args.out, {"load_average": os.getloadavg(), "cpus": os.cpu_count(),
                              "sizes": rows})  # fmt: skip


if __name__ == "__main__":
    main()
