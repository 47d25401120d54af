"""FLOP rate of the Monte Carlo solver's contractions against this machine's matmul rate.

At every step and layer the Monte Carlo march (``dmft.monte_carlo``) does 14 products of a
site array (Mk times × S sites, stored sites last; Mk the width of the current time segment)
with a block of P rows: averages ``A xᵀ/S`` (Mk×S)@(S×P) and combinations ``C A``
(P×Mk)@(Mk×S), four in each
sweep's Gram–Schmidt, plus sources, responses joined with memory terms; three more per step for
h¹'s memory term and the kernel rows of the last layer and of g¹; and 4 products of a P × Mk row with an Mk × Mk whitening
factor (kernel rows and memory coefficients). Everything else (eigendecompositions of P×P blocks,
element-wise maps, O(S·P²) products) is a small fraction. Two rates are reported:

- **in the solver** (the acceptance figure): a third call runs under ``jax.profiler``; every
  operation of the compiled march that is or contains a dot gets its FLOPs from the optimized HLO
  (dumped by XLA for this purpose), and their sum is divided by the wall time during which at
  least one of them runs (the union of their intervals, so products of the two replicas running
  side by side on the two cores are not counted twice, and whatever overlaps them counts against
  them). The rate over the summed durations (per-thread) is reported too.
- **over the whole solve**: the multiply-adds above, counted for the segment widths the solver
  uses, divided by the wall time of a steady-state solve (second call, two replicas, float32): a
  lower bound, since that time includes the random draw, element-wise work and copies.

Reported next to it, measured in the same process:
- the square float32 matmul rate (n = 2048), the machine's reference FLOP rate;
- the same two skinny products alone at the solver's shapes (what they reach when nothing else
  runs), and the memory bandwidth of a read (sum of a large array): the skinny products do
  2P flops per 4-byte element read, so at small P they are bound by bandwidth, not arithmetic.

    python benchmarks/bench_mc_flops.py [--small] [--out results/mc_flops.json]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
import sys
import tempfile
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
        per_step = (14 * L + 3) * P * S * Mk + S * Mk  # + w (a vector product)
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


_SHAPE = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \w+\[([\d,]*)\]")
_DOT = re.compile(r"= \w+\[([\d,]*)\]\S* dot\(%([\w.\-]+), %[\w.\-]+\)")


def dot_flops(hlo_text: str) -> dict[str, int]:
    """FLOPs of each instruction of an optimized HLO module that is a dot or a fusion holding dots."""
    shapes, body, comp = {}, {}, None
    for line in hlo_text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            comp = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            body[comp] = []
        elif comp is not None:
            body[comp].append(line)
        m = _SHAPE.match(line)
        if m:
            shapes[m.group(1)] = [int(v) for v in m.group(2).split(",") if v]

    def flops(line):
        m = _DOT.search(line)
        if not m:
            return 0
        out, lhs = m.group(1), shapes[m.group(2)]
        dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1)
        k = int(np.prod([lhs[int(d)] for d in dims.split(",") if d]))
        return 2 * int(np.prod([int(v) for v in out.split(",") if v])) * k

    result = {}
    for lines in body.values():
        for line in lines:
            m = _SHAPE.match(line)
            if not m:
                continue
            n = flops(line)
            called = re.search(r" fusion\(.*calls=%([\w.\-]+)", line)
            if not n and called:
                n = sum(flops(inner) for inner in body.get(called.group(1), []))
            if n:
                result[m.group(1)] = n
    return result


def traced_rate(run, dump_dir: str, module: str = "jit__mc_replicas") -> dict:
    """Profile one call of ``run``; the FLOP rate of the dots of ``module`` while they run."""
    import jax

    (path,) = sorted(glob.glob(os.path.join(dump_dir, f"*.{module}.cpu_after_optimizations.txt")),
                     key=os.path.getmtime)[-1:]  # fmt: skip
    with open(path) as fh:
        flops = dot_flops(fh.read())
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            t0 = time.perf_counter()
            run()
            wall = time.perf_counter() - t0
        (trace,) = glob.glob(
            os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True
        )
        with gzip.open(trace) as fh:
            events = json.load(fh)
    events = events["traceEvents"] if isinstance(events, dict) else events
    ops = [
        e for e in events if e.get("ph") == "X" and e.get("args", {}).get("hlo_module") == module
    ]
    dots = sorted(
        (e["ts"], e["ts"] + e["dur"], flops[e["name"]]) for e in ops if e["name"] in flops
    )
    if not dots:
        raise RuntimeError(f"no dot of {module} in the trace ({len(ops)} operations)")
    union, start, end = 0.0, dots[0][0], dots[0][1]
    for a, b, _ in dots[1:]:
        if a > end:
            union, start = union + end - start, a
        end = max(end, b)
    union = (union + end - start) / 1e6
    summed = sum(b - a for a, b, _ in dots) / 1e6
    total = sum(f for _, _, f in dots)
    return {"traced_wall_s": wall, "dot_flops": total, "dot_ops": len(flops),
            "dot_time_union_s": union, "dot_time_summed_s": summed,
            "all_op_time_summed_s": sum(e["dur"] for e in ops) / 1e6,
            "gflops_in_solver": total / union / 1e9, "gflops_per_thread": total / summed / 1e9}  # fmt: skip


def solve_rate(P: int, L: int, T: int, S: int, dump_dir: str) -> dict:
    import jax

    import dmft

    X = np.random.default_rng(0).normal(size=(P, 5))
    y = np.sign(np.random.default_rng(1).normal(size=P))
    kw = dict(depth=L, activation="relu", eta0=0.3, steps=T, samples=S, replicas=2)
    kw.update(throw=False, dtype="float32", progress=False)

    def run():
        jax.block_until_ready(dmft.solve_dmft(X, y, **kw).loss)

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    flops = 2 * 2 * march_macs(P, L, T, S)  # two replicas
    return {"P": P, "L": L, "T": T, "S": S, "first_s": first, "second_s": wall,
            "contraction_flops": flops, "gflops": flops / wall / 1e9,
            "traced": traced_rate(run, dump_dir)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.small:
        sizes = [(4, 2, 6, 2048), (8, 2, 4, 2048)]
    else:
        sizes = [(8, 8, 30, 16384), (16, 8, 20, 16384), (32, 4, 12, 16384)]
    # XLA writes the optimized march it compiles here, for the FLOPs of each traced operation;
    # the flags must be set before jax starts its backend
    dump_dir = tempfile.mkdtemp(prefix="dmft_hlo_")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
        " --xla_dump_hlo_pass_re=NONE --xla_dump_hlo_module_re=.*mc_replicas.*"
    )
    rows = []
    for P, L, T, S in sizes:
        M = (T + 1) * P
        rates = machine_rates(P, S, M)
        row = {**solve_rate(P, L, T, S, dump_dir), "machine": rates}
        square = rates["square_2048_gflops"]
        row["fraction_of_square"] = row["gflops"] / square
        tr = row["traced"]
        tr["fraction_of_square"] = tr["gflops_in_solver"] / square
        rows.append(row)
        print(
            f"P={P} L={L} T={T} S={S}: contractions in the solver {tr['gflops_in_solver']:.1f} "
            f"GFLOP/s = {tr['fraction_of_square']:.0%} of square matmul {square:.0f} GFLOP/s "
            f"({tr['gflops_per_thread']:.1f} per thread; dots run {tr['dot_time_union_s']:.2f} s "
            f"of a {tr['traced_wall_s']:.2f} s traced call); over the whole solve "
            f"{row['gflops']:.1f} GFLOP/s = {row['fraction_of_square']:.0%} (second call "
            f"{row['second_s']:.2f} s); alone at M={M}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in rates.items() if k != "square_2048_gflops"),
            flush=True,
        )
    if args.out:
        write_json(args.out, {"load_average": os.getloadavg(), "cpus": os.cpu_count(),
                              "sizes": rows})  # fmt: skip


if __name__ == "__main__":
    main()
