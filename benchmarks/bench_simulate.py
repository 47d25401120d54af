"""Speed and memory of ``dmft.simulate`` on this machine, against a PyTorch CPU reference.

Usage::

    python benchmarks/bench_simulate.py [--small] [--out benchmarks/results/simulate.json]
                                        [--torch-python /path/to/python-with-torch]

Sections (each a key of the JSON written to ``--out``):

- ``matmul``: float32 matrix-product rates of JAX on this machine: a square product, the
  seeds-batched block product ``W @ a`` of the simulator's forward pass, and ``Wᵀ @ g`` of its
  backward pass; median of several runs after a warm-up.
- ``simulate``: ``dmft.simulate`` on random data (full-batch GD, depth-μP, ReLU, float32): the
  first call (compilation and run) and a second call with another η₀, which must reuse the
  compiled program (the number of compilations during it is recorded). FLOPs are counted per
  step and seed as forward ``2LN²P``, backward ``2LN²P`` and weight gradient ``2LN²P``, plus
  ``4NDP`` for the input layer and ``4NP`` for the readout (kernels and NTK not counted).
- ``jax_autodiff``: the same training written directly in JAX with ``jax.vjp`` (per-layer weight
  arrays, no order parameters), for a JAX-to-JAX comparison.
- ``torch``: ``benchmarks/torch_reference.py`` run by ``--torch-python`` in a subprocess
  (PyTorch, ``torch.autograd``, 2 threads; seeds batched with ``bmm`` or looped, whichever a
  short trial finds faster).
- ``check``: float64 cross-check at small size: ``dmft.simulate``, the JAX autodiff version
  and PyTorch from the same initial weights must give the same loss trajectory.
- ``memory``: peak resident memory (``ru_maxrss`` of a child process, and the child's own
  ``VmHWM``) of a large ``dmft.simulate`` call, with the chunking over seeds implied by
  ``dmft.estimate_memory``. It runs first, while the parent process is still small.

Wall times are ``*_s``; ``cpu_s`` is process CPU time over the same interval. The CPUs kept
busy by other processes are sampled before and after the run (``busy_cpus_*``): on a machine
with two cores one busy neighbour can double every time, so compare numbers from quiet runs.
``--small`` runs everything at tiny sizes, for a smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_SCRIPT = os.path.join(HERE, "torch_reference.py")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
RSS_LIMIT_BYTES = 8 * 10**9


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the benchmark uses."""

    width: int
    depth: int
    steps: int
    seeds: int
    points: int
    dim: int
    eta0: float
    eta0_second: float
    matmul_n: int
    check: dict
    memory: dict
    repeats: int
    data_seed: int = 0


FULL = Sizes(
    width=1024,
    depth=8,
    steps=100,
    seeds=16,
    points=16,
    dim=16,
    eta0=0.05,
    eta0_second=0.04,
    matmul_n=2048,
    check=dict(width=64, depth=4, seeds=2, steps=5),
    memory=dict(width=2048, depth=16, seeds=64, steps=5),
    repeats=7,
)

SMALL = Sizes(
    width=128,
    depth=4,
    steps=10,
    seeds=4,
    points=8,
    dim=8,
    eta0=0.05,
    eta0_second=0.04,
    matmul_n=256,
    check=dict(width=64, depth=4, seeds=2, steps=5),
    memory=dict(width=256, depth=4, seeds=8, steps=2),
    repeats=3,
)


def make_data(points: int, dim: int, seed: int):
    """Random inputs (P, D) with standard normal entries and targets (P,)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(points, dim)), rng.normal(size=points)


def flops_per_step(width: int, depth: int, points: int, dim: int) -> int:
    """FLOPs of one GD step of one network (forward, backward, weight gradient)."""
    N, L, P, D = width, depth, points, dim
    return 6 * L * N * N * P + 4 * N * D * P + 4 * N * P


# ------------------------------------------------------------------------------------------
# Timing and bookkeeping helpers
# ------------------------------------------------------------------------------------------


class Clock:
    """Context manager measuring wall and process CPU seconds."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        return False


class CompileCounter:
    """Counts XLA backend compilations (and their seconds) while active."""

    def __init__(self):
        import jax.monitoring

        self.count, self.seconds, self._active = 0, 0.0, False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **_):
        if self._active and event == COMPILE_EVENT:
            self.count += 1
            self.seconds += duration

    def __enter__(self):
        self.count, self.seconds, self._active = 0, 0.0, True
        return self

    def __exit__(self, *exc):
        self._active = False
        return False


def median_time(fn, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` (blocked on its result) after one warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def write_json_atomic(obj, path: str) -> None:
    """Write JSON to ``path`` through a temporary file in the same directory."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".simulate-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def run_child(args: list[str]) -> tuple[dict, int]:
    """Run ``python <this file> --child ...``; return its JSON answer and its peak RSS in bytes.

    The peak RSS is the child's ``ru_maxrss``, read with ``os.wait4`` so that no other child
    process is counted. On Linux ``ru_maxrss`` survives ``exec``: it starts at the parent's
    resident size when the child is spawned, so spawn memory children while the parent is
    small (the child reports that starting value, and its own high-water mark ``VmHWM``).
    """
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed with exit code {proc.returncode}")
    answer = json.loads(stdout.strip().splitlines()[-1])
    return answer, usage.ru_maxrss * 1024  # kilobytes on Linux


def proc_status(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def busy_cpus(seconds: float = 1.0) -> float | None:
    """CPUs kept busy over ``seconds`` by all processes (from ``/proc/stat``); None off Linux.

    Sampled while the benchmark itself is idle, it measures what else runs on the machine.
    """

    def sample():
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def machine_info() -> dict:
    """CPU model, core count, load and library versions."""
    import jax

    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "numpy": np.__version__,
        "dmft": importlib.metadata.version("dmft"),
        "jax_devices": [str(d) for d in jax.devices()],
    }


# ------------------------------------------------------------------------------------------
# 1. Matrix-product rates
# ------------------------------------------------------------------------------------------


def bench_matmul(sz: Sizes) -> dict:
    """GFLOP/s of float32 JAX matrix products: square, and the simulator's block shapes."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    n, N, P, S = sz.matmul_n, sz.width, sz.points, sz.seeds
    A = jax.random.normal(keys[0], (n, n), jnp.float32)
    W = jax.random.normal(keys[1], (S, N, N), jnp.float32)
    a = jax.random.normal(keys[2], (S, N, P), jnp.float32)
    cases = {
        f"square_{n}": (jax.jit(jnp.dot), (A, A), 2 * n**3),
        f"batched_{S}x({N}x{N})@({N}x{P})": (jax.jit(jnp.matmul), (W, a), 2 * S * N * N * P),
        f"batched_transposed_{S}x({N}x{N})T@({N}x{P})": (
            jax.jit(lambda W, a: jnp.einsum("snm,snp->smp", W, a)),
            (W, a),
            2 * S * N * N * P,
        ),
    }
    out = {}
    for name, (fn, args, flops) in cases.items():
        seconds = median_time(fn, *args, repeats=sz.repeats)
        out[name] = {"seconds": seconds, "gflops": flops / seconds / 1e9}
    return out


# ------------------------------------------------------------------------------------------
# 2. dmft.simulate
# ------------------------------------------------------------------------------------------


def simulate_kwargs(sz: Sizes) -> dict:
    """Arguments of the timed ``dmft.simulate`` calls, besides the data and η₀."""
    return dict(
        width=sz.width,
        depth=sz.depth,
        steps=sz.steps,
        seeds=sz.seeds,
        activation="relu",
        dtype="float32",
    )


def bench_simulate(sz: Sizes, X, y, counter: CompileCounter) -> dict:
    """First call (compile + run) and a second call with another η₀ (no recompilation)."""
    import dmft

    kwargs = simulate_kwargs(sz)
    with counter, Clock() as first:
        res1 = dmft.simulate(X, y, eta0=sz.eta0, **kwargs)
    first_compiles, compile_s = counter.count, counter.seconds
    with counter, Clock() as second:
        res2 = dmft.simulate(X, y, eta0=sz.eta0_second, **kwargs)
    per_seed = dmft.estimate_memory(
        width=sz.width, depth=sz.depth, n_points=sz.points, dim=sz.dim, steps=sz.steps
    )
    flops = sz.seeds * sz.steps * flops_per_step(sz.width, sz.depth, sz.points, sz.dim)
    return {
        "settings": {**kwargs, "points": sz.points, "dim": sz.dim, "eta0": sz.eta0},
        "eta0_second": sz.eta0_second,
        "first_call_s": first.wall,
        "first_call_cpu_s": first.cpu,
        "compile_s": compile_s,
        "compilations_first_call": first_compiles,
        "steady_s": second.wall,
        "steady_cpu_s": second.cpu,
        "compilations_second_call": counter.count,
        "chunking": chunking(per_seed, sz.seeds, width=sz.width, depth=sz.depth, dim=sz.dim),
        "flops": flops,
        "gflops": flops / second.wall / 1e9,
        "final_loss_mean": [float(res1.loss[:, -1].mean()), float(res2.loss[:, -1].mean())],
    }


def chunking(bytes_per_seed: int, seeds: int, *, width, depth, dim, budget=None) -> dict:
    """The chunks ``dmft.simulate`` forms by default (memory budget, and the CPU weight cap)."""
    from dmft.simulate import DEFAULT_MEMORY_BUDGET, default_chunk_size

    budget = DEFAULT_MEMORY_BUDGET if budget is None else budget
    size = default_chunk_size(
        seeds=seeds,
        bytes_per_seed=bytes_per_seed,
        width=width,
        depth=depth,
        dim=dim,
        memory_budget=budget,
    )
    n_chunks = math.ceil(seeds / size)
    return {
        "estimated_bytes_per_seed": bytes_per_seed,
        "estimated_bytes_all_seeds": bytes_per_seed * seeds,
        "memory_budget": budget,
        "n_chunks": n_chunks,
        "chunk_size": math.ceil(seeds / n_chunks),
    }


# ------------------------------------------------------------------------------------------
# 3. The same training written directly in JAX, with autodiff
# ------------------------------------------------------------------------------------------


def jax_autodiff_init(key, *, seeds: int, width: int, depth: int, dim: int, dtype):
    """Weights ``(W0 (S,N,D), (W1 … WL) each (S,N,N), w (S,N))``, i.i.d. N(0, 1)."""
    import jax

    k0, k1, k2 = jax.random.split(key, 3)
    blocks = tuple(
        jax.random.normal(k, (seeds, width, width), dtype) for k in jax.random.split(k1, depth)
    )
    return (
        jax.random.normal(k0, (seeds, width, dim), dtype),
        blocks,
        jax.random.normal(k2, (seeds, width), dtype),
    )


def jax_autodiff_train(params, X, y, eta0, *, steps: int, beta0=1.0, gamma0=1.0):
    """Full-batch GD of depth-μP ReLU ResNets (SPEC §1, α = 1/2); losses (S, steps + 1).

    Activations are point-major, ``h : (S, P, N)``; gradients come from ``jax.vjp`` of the
    sum of the seeds' losses, and every layer uses the learning rate ``η₀ γ₀² N``.
    """
    import jax
    import jax.numpy as jnp

    W0, blocks, _ = params
    N, D, L = W0.shape[1], W0.shape[2], len(blocks)
    branch = beta0 / math.sqrt(L) / math.sqrt(N)
    lr = eta0 * gamma0**2 * N

    def loss(params):
        W0, blocks, w = params
        h = jnp.einsum("pd,snd->spn", X, W0) / math.sqrt(D)
        for W in blocks:
            h = h + branch * jnp.einsum("spm,snm->spn", jax.nn.relu(h), W)
        f = jnp.einsum("spn,sn->sp", jax.nn.relu(h), w) / (gamma0 * N)
        return 0.5 * jnp.mean((y - f) ** 2, axis=-1)

    def step(params, _):
        value, vjp = jax.vjp(loss, params)
        (grads,) = vjp(jnp.ones_like(value))
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), value

    params, losses = jax.lax.scan(step, params, None, length=steps)
    return jnp.concatenate([losses, loss(params)[None]]).T


def bench_jax_autodiff(sz: Sizes, X, y, counter: CompileCounter) -> dict:
    """First and second call of the direct JAX version (initialisation included)."""
    import functools

    import jax
    import jax.numpy as jnp

    @functools.partial(jax.jit, static_argnames=("steps",))
    def run(key, X, y, eta0, steps):
        params = jax_autodiff_init(
            key, seeds=sz.seeds, width=sz.width, depth=sz.depth, dim=X.shape[1], dtype=X.dtype
        )
        return jax_autodiff_train(params, X, y, eta0, steps=steps)

    Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)
    key = jax.random.PRNGKey(0)
    with counter, Clock() as first:
        loss1 = np.asarray(run(key, Xj, yj, jnp.float32(sz.eta0), sz.steps))
    compile_s = counter.seconds
    with counter, Clock() as second:
        loss2 = np.asarray(run(key, Xj, yj, jnp.float32(sz.eta0_second), sz.steps))
    flops = sz.seeds * sz.steps * flops_per_step(sz.width, sz.depth, sz.points, sz.dim)
    return {
        "first_call_s": first.wall,
        "compile_s": compile_s,
        "steady_s": second.wall,
        "steady_cpu_s": second.cpu,
        "compilations_second_call": counter.count,
        "gflops": flops / second.wall / 1e9,
        "final_loss_mean": [float(loss1[:, -1].mean()), float(loss2[:, -1].mean())],
    }


# ------------------------------------------------------------------------------------------
# 4. PyTorch, in its own interpreter
# ------------------------------------------------------------------------------------------


def find_torch_python(requested: str | None) -> tuple[str | None, str]:
    """The interpreter to run PyTorch with, or None and the reason it is unavailable."""
    python = requested or sys.executable
    if not os.path.exists(python):
        return None, f"{python} does not exist"
    probe = subprocess.run([python, "-c", "import torch, numpy"], capture_output=True)
    if probe.returncode != 0:
        return None, f"{python} cannot import torch and numpy (pass --torch-python)"
    return python, ""


def run_torch(python: str, folder: str, name: str, data: str, **options) -> dict:
    """Run torch_reference.py with ``--key value`` options; return its JSON."""
    out = os.path.join(folder, f"{name}.json")
    cmd = [python, TORCH_SCRIPT, "--data", data, "--out", out]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    with Clock() as clock:
        subprocess.run(cmd, check=True)
    with open(out) as fh:
        answer = json.load(fh)
    answer["subprocess_s"] = clock.wall
    return answer


def bench_torch(sz: Sizes, python: str, folder: str, data: str, threads: int) -> dict:
    """The PyTorch reference at the benchmark's sizes, in its faster mode."""
    answer = run_torch(
        python,
        folder,
        "torch_full",
        data,
        width=sz.width,
        depth=sz.depth,
        steps=sz.steps,
        seeds=sz.seeds,
        eta0=sz.eta0,
        dtype="float32",
        mode="auto",
        threads=threads,
    )
    mode = answer["fastest"]
    result = answer["modes"][mode]
    loss = np.asarray(result.pop("loss"))
    return {
        "torch_version": answer["torch_version"],
        "threads": answer["threads"],
        "mode": mode,
        "mode_note": "bmm: seeds batched with torch.bmm; loop: one seed at a time",
        "trials": answer["trials"],
        **result,
        "subprocess_s": answer["subprocess_s"],
        "final_loss_mean": float(loss[:, -1].mean()),
    }


# ------------------------------------------------------------------------------------------
# 5. Float64 cross-check from the same initial weights
# ------------------------------------------------------------------------------------------


def child_check(options: dict) -> dict:
    """In a float64 child: dmft.simulate and the JAX autodiff version from the same weights."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import dmft

    X, y = np.asarray(options["X"]), np.asarray(options["y"])
    c = options["check"]
    kwargs = dict(
        width=c["width"],
        depth=c["depth"],
        seeds=c["seeds"],
        activation="relu",
        dtype="float64",
        eta0=options["eta0"],
    )
    init = dmft.simulate(X, y, steps=0, return_params=True, **kwargs).params
    res = dmft.simulate(X, y, steps=c["steps"], **kwargs)
    np.savez(options["init_path"], **{k: np.asarray(v) for k, v in init.items()})
    params = (
        jnp.asarray(init["W0"]),
        tuple(jnp.asarray(init["Ws"][:, l]) for l in range(c["depth"])),
        jnp.asarray(init["w"]),
    )
    auto = jax_autodiff_train(
        params, jnp.asarray(X), jnp.asarray(y), options["eta0"], steps=c["steps"]
    )
    return {"dmft": res.loss.tolist(), "jax_autodiff": np.asarray(auto).tolist()}


def max_rel_diff(a, b) -> float:
    """max |a − b| / |b| over all entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def bench_check(sz: Sizes, X, y, python: str | None, folder: str) -> dict:
    """Loss trajectories of dmft, JAX autodiff and PyTorch (both modes) from dmft's weights."""
    init_path = os.path.join(folder, "check_init.npz")
    options = dict(X=X.tolist(), y=y.tolist(), check=sz.check, eta0=sz.eta0, init_path=init_path)
    answer, _ = run_child(["--child", "check", json.dumps(options)])
    out = {
        "settings": {**sz.check, "dtype": "float64", "eta0": sz.eta0},
        "dmft_loss": answer["dmft"],
        "max_rel_diff_jax_autodiff": max_rel_diff(answer["jax_autodiff"], answer["dmft"]),
    }
    if python:
        torch_answer = run_torch(
            python,
            folder,
            "torch_check",
            os.path.join(folder, "data.npz"),
            init=init_path,
            dtype="float64",
            mode="both",
            eta0=sz.eta0,
            threads=2,
            **{k: v for k, v in sz.check.items()},
        )
        for mode, result in torch_answer["modes"].items():
            out[f"torch_{mode}_loss"] = result["loss"]
            out[f"max_rel_diff_torch_{mode}"] = max_rel_diff(result["loss"], answer["dmft"])
    diffs = [v for k, v in out.items() if k.startswith("max_rel_diff")]
    out["max_rel_diff"] = max(diffs)
    out["agree"] = out["max_rel_diff"] < 1e-9
    return out


# ------------------------------------------------------------------------------------------
# 6. Peak memory of a large call, in a child process
# ------------------------------------------------------------------------------------------


def child_memory(options: dict) -> dict:
    """In a child: one large dmft.simulate call; returns its time and resident memory."""
    import dmft

    X, y = np.asarray(options["X"]), np.asarray(options["y"])
    m = options["memory"]
    per_seed = dmft.estimate_memory(
        width=m["width"], depth=m["depth"], n_points=len(X), dim=X.shape[1], steps=m["steps"]
    )
    baseline = proc_status("VmRSS")
    with Clock() as clock:
        res = dmft.simulate(X, y, activation="relu", dtype="float32", **m)
    return {
        "chunking": chunking(
            per_seed, m["seeds"], width=m["width"], depth=m["depth"], dim=X.shape[1]
        ),
        "rss_after_import_bytes": baseline,
        "vmhwm_bytes": proc_status("VmHWM"),
        "seconds": clock.wall,
        "final_loss_mean": float(res.loss[:, -1].mean()),
    }


def bench_memory(sz: Sizes, X, y) -> dict:
    """Peak memory of one large call, in a child spawned before this process imports JAX."""
    m = sz.memory
    options = dict(X=X.tolist(), y=y.tolist(), memory=m)
    parent_rss = proc_status("VmRSS")
    answer, peak = run_child(["--child", "memory", json.dumps(options)])
    return {
        "settings": {**m, "points": len(X), "dim": X.shape[1], "dtype": "float32"},
        "parent_rss_at_spawn_bytes": parent_rss,
        "peak_rss_bytes": peak,
        "peak_rss_gib": peak / 2**30,
        "limit_bytes": RSS_LIMIT_BYTES,
        "within_limit": peak < RSS_LIMIT_BYTES,
        **answer,
    }


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def summarize(report: dict) -> str:
    """A readable summary of the report."""
    lines = [
        f"machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores, "
        f"busy CPUs before/after {_fmt(report['busy_cpus_start'])}/"
        f"{_fmt(report['busy_cpus_end'])}; "
        f"jax {report['machine']['jax']}"
    ]
    for name, r in report["matmul"].items():
        lines.append(f"matmul {name}: {r['gflops']:.1f} GFLOP/s ({1e3 * r['seconds']:.2f} ms)")
    s = report["simulate"]
    lines.append(
        f"dmft.simulate {s['settings']}: first call {s['first_call_s']:.2f} s "
        f"(backend compile {s['compile_s']:.2f} s), steady {s['steady_s']:.2f} s "
        f"(cpu {s['steady_cpu_s']:.2f} s, {s['compilations_second_call']} recompilations), "
        f"{s['chunking']['n_chunks']} chunk(s) of {s['chunking']['chunk_size']} seeds"
    )
    lines.append(
        f"  achieved {s['gflops']:.2f} GFLOP/s = {s['fraction_of_square']:.1%} of the square "
        f"matmul rate, {s['fraction_of_batched']:.1%} of the batched block-product rate"
    )
    a = report["jax_autodiff"]
    lines.append(
        f"JAX autodiff version: first {a['first_call_s']:.2f} s, steady {a['steady_s']:.2f} s, "
        f"{a['gflops']:.2f} GFLOP/s"
    )
    t = report["torch"]
    if "skipped" in t:
        lines.append(f"PyTorch: skipped ({t['skipped']})")
    else:
        lines.append(
            f"PyTorch {t['torch_version']} ({t['mode']}, {t['threads']} threads): "
            f"{t['total_s']:.2f} s (init {t['init_s']:.2f} s, train {t['train_s']:.2f} s); "
            f"torch / dmft steady = {report['ratio_torch_over_jax']:.2f}, "
            f"torch / JAX autodiff = {report['ratio_torch_over_jax_autodiff']:.2f}"
        )
    c = report["check"]
    lines.append(
        f"float64 cross-check {c['settings']}: max relative loss difference "
        f"{c['max_rel_diff']:.2e} ({'agree' if c['agree'] else 'DISAGREE'})"
    )
    m = report["memory"]
    lines.append(
        f"memory {m['settings']}: peak RSS {m['peak_rss_gib']:.2f} GiB "
        f"(own VmHWM {m['vmhwm_bytes'] / 2**30:.2f} GiB) "
        f"({'below' if m['within_limit'] else 'ABOVE'} {m['limit_bytes'] / 1e9:.0f} GB), "
        f"{m['chunking']['n_chunks']} chunks of {m['chunking']['chunk_size']} seeds, "
        f"{m['seconds']:.1f} s"
    )
    if s["compilations_second_call"] or a["compilations_second_call"]:
        lines.append("WARNING: the second call recompiled; steady-state times include compilation")
    busy = max(report["busy_cpus_start"] or 0.0, report["busy_cpus_end"] or 0.0)
    if busy > 0.25:
        lines.append(
            f"WARNING: other processes kept {busy:.2f} CPUs busy before or after the run; "
            "the timings are likely slowed down"
        )
    lines.append(f"total benchmark time {report['total_s']:.1f} s")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/simulate.json)")
    parser.add_argument(
        "--torch-python",
        help="interpreter with torch and numpy (default: this one, if it has them)",
    )
    parser.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    sz = SMALL if args.small else FULL
    out_path = args.out or os.path.join(
        HERE, "results", "simulate_small.json" if args.small else "simulate.json"
    )

    start = time.perf_counter()
    report = {
        "benchmark": "simulate",
        "small": args.small,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_start": list(os.getloadavg()),
        "busy_cpus_start": busy_cpus(),
        "sizes": dataclasses.asdict(sz),
    }
    X, y = make_data(sz.points, sz.dim, sz.data_seed)
    torch_python, torch_reason = find_torch_python(args.torch_python)

    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as folder:
        data_path = os.path.join(folder, "data.npz")
        np.savez(data_path, X=X, y=y)

        # first, while this process is small (see run_child)
        report["memory"] = bench_memory(sz, X, y)
        report["machine"] = machine_info()
        counter = CompileCounter()
        report["matmul"] = bench_matmul(sz)
        report["simulate"] = bench_simulate(sz, X, y, counter)
        square = report["matmul"][f"square_{sz.matmul_n}"]["gflops"]
        batched = next(v["gflops"] for k, v in report["matmul"].items() if k.startswith("batched_"))
        report["simulate"]["fraction_of_square"] = report["simulate"]["gflops"] / square
        report["simulate"]["fraction_of_batched"] = report["simulate"]["gflops"] / batched
        report["jax_autodiff"] = bench_jax_autodiff(sz, X, y, counter)

        if torch_python:
            report["torch"] = bench_torch(sz, torch_python, folder, data_path, args.torch_threads)
            report["ratio_torch_over_jax"] = (
                report["torch"]["total_s"] / report["simulate"]["steady_s"]
            )
            report["ratio_torch_over_jax_autodiff"] = (
                report["torch"]["total_s"] / report["jax_autodiff"]["steady_s"]
            )
        else:
            report["torch"] = {"skipped": torch_reason}

        report["check"] = bench_check(sz, X, y, torch_python, folder)

    report["load_end"] = list(os.getloadavg())
    report["busy_cpus_end"] = busy_cpus()
    report["total_s"] = time.perf_counter() - start
    write_json_atomic(report, out_path)
    print(summarize(report))
    print(f"written to {out_path}")
    return report


def child_main(kind: str, options: str) -> None:
    """Entry point of the child processes; prints one JSON line."""
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    handlers = {"check": child_check, "memory": child_memory}
    answer = handlers[kind](json.loads(options))
    print(json.dumps({**answer, "inherited_maxrss_bytes": inherited}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
