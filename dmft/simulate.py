"""Train ensembles of finite residual networks and record their order parameters."""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dmft import network
from dmft import progress as progress_bar
from dmft.activations import Activation
from dmft.parameterization import scales
from dmft.results import SimulationResult
from dmft.schedule import batch_schedule
from dmft.settings import (
    OPTIMIZERS,
    check_common,
    check_data,
    check_flow,
    check_int,
    check_only,
    resolve_dtype,
)

DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes per chunk of seeds
# On CPU the step is bound by streaming the weights; a chunk whose weights stay near cache size
# runs faster than a wide vmap (16 seeds, N = 1024, L = 8, 20 steps on 2 cores: 7.1–7.4 s one
# seed at a time, 9.0–10.1 s in chunks of 8). Accelerators keep the memory-budget rule.
CPU_CHUNK_PARAMS = 2**22


@dataclasses.dataclass(frozen=True)
class _Config:
    width: int
    depth: int
    act: Activation
    parameterization: str
    alpha: float
    optimizer: str
    momentum: float
    center: bool
    two_time_layers: tuple
    n_train: int
    return_params: bool = False
    flow_substeps: int = 0  # > 0: gradient flow by Heun's method, this many steps per interval
    progress: bool = False  # report each step to the open progress bar


def _make_optimizer(cfg: _Config, sc) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        make = optax.adam
    else:
        momentum = cfg.momentum if cfg.momentum > 0 else None
        make = lambda lr: optax.sgd(lr, momentum=momentum)  # noqa: E731
    return optax.multi_transform(
        {
            "input": make(sc.lr_input),
            "hidden": make(sc.lr_hidden),
            "readout": make(sc.lr_readout),
        },
        {"W0": "input", "Ws": "hidden", "w": "readout"},
    )


def _train_one(key, X_all, y, y_test, masks, eta0, beta0, gamma0, cfg: _Config):
    """One network: T+1 evaluations with T updates in between (a scan over steps)."""
    P = cfg.n_train
    dtype = X_all.dtype
    params = network.init_params(
        key, width=cfg.width, depth=cfg.depth, dim=X_all.shape[1], dtype=dtype
    )
    sc = scales(
        cfg.parameterization,
        width=cfg.width,
        depth=cfg.depth,
        alpha=cfg.alpha,
        beta0=beta0,
        gamma0=gamma0,
        eta0=eta0,
        optimizer=cfg.optimizer,
    )
    opt = _make_optimizer(cfg, sc)
    Kx = network.input_kernel(X_all[:P])
    f_init = network.forward(params, X_all, act=cfg.act, sc=sc)[1] if cfg.center else 0.0
    tt = jnp.asarray(cfg.two_time_layers, dtype=jnp.int32) - 1

    def evaluate(params):
        h_all, f_all = network.forward(params, X_all, act=cfg.act, sc=sc)
        f_all = f_all - f_init
        h = h_all[..., :P]
        delta = y - f_all[:P]
        g = network.backward(params, h, act=cfg.act, sc=sc)
        phi_k, g_k, h_k = network.kernels(h, g, act=cfg.act)
        out = {
            "loss": 0.5 * jnp.mean(delta**2),
            "predictions": f_all[:P],
            "ntk": network.ntk_from_kernels(Kx, phi_k, g_k, sc.ntk_block),
            "phi_kernel": phi_k,
            "g_kernel": g_k,
            "h_kernel": h_k,
        }
        if y_test is not None:
            out["test_predictions"] = f_all[P:]
            out["test_loss"] = 0.5 * jnp.mean((y_test - f_all[P:]) ** 2)
        if cfg.two_time_layers:
            out["phi_feat"] = cfg.act.fn(h[tt])
            out["g_feat"] = g[tt]
            out["h_feat"] = h[tt]
        return out, (h, g, delta)

    def lr_step(params, grads, scale):
        lr = {"W0": sc.lr_input, "Ws": sc.lr_hidden, "w": sc.lr_readout}
        return {k: params[k] - scale * lr[k] * grads[k] for k in params}

    def full_batch_grads(params, h, g, delta):
        return network.gradients(params, X_all[:P], h, g, delta / P, act=cfg.act, sc=sc)

    def flow_grads(params):
        h_all, f_all = network.forward(params, X_all, act=cfg.act, sc=sc)
        h = h_all[..., :P]
        g = network.backward(params, h, act=cfg.act, sc=sc)
        return full_batch_grads(params, h, g, y - (f_all[:P] - f_init))

    def heun(params, k1):  # dθ/dτ = −lr·∇loss, second order (lr carries the substep dτ)
        k2 = flow_grads(lr_step(params, k1, 1.0))
        return lr_step(params, jax.tree_util.tree_map(jnp.add, k1, k2), 0.5)

    def step(carry, mask):
        params, opt_state = carry
        if cfg.progress:
            progress_bar.tick(mask)
        if cfg.flow_substeps:
            out, (h, g, delta) = evaluate(params)
            # the first substep starts from the fields evaluate() already computed
            params = heun(params, full_batch_grads(params, h, g, delta))
            params = lax.fori_loop(
                1, cfg.flow_substeps, lambda _, p: heun(p, flow_grads(p)), params
            )
            return (params, opt_state), out
        out, (h, g, delta) = evaluate(params)
        error = mask * delta / jnp.sum(mask)
        if cfg.optimizer != "adam" and cfg.momentum == 0:  # plain (S)GD: fused update
            params = network.sgd_update(params, X_all[:P], h, g, error, act=cfg.act, sc=sc)
            return (params, opt_state), out
        grads = network.gradients(params, X_all[:P], h, g, error, act=cfg.act, sc=sc)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), out

    (params, _), out = lax.scan(step, (params, opt.init(params)), masks)
    last, _ = evaluate(params)
    out = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b[None]]), out, last)
    for name in ("phi_kernel", "g_kernel", "h_kernel"):
        out[name] = jnp.swapaxes(out[name], 0, 1)  # (L+1, T+1, P, P)
    if cfg.two_time_layers:
        for name in ("phi", "g", "h"):
            feat = out.pop(f"{name}_feat")  # (T+1, k, N, P)
            out[f"{name}_two_time"] = jnp.einsum("tknp,sknq->ktspq", feat, feat) / cfg.width
    if cfg.return_params:
        out["params"] = params
    return out


_run_chunk = jax.jit(
    jax.vmap(_train_one, in_axes=(0, None, None, None, None, None, None, None, None)),
    static_argnums=(8,),
)


def default_chunk_size(*, seeds, bytes_per_seed, width, depth, dim, memory_budget=None) -> int:
    """Seeds per compiled batch when ``chunk_size`` is not given: as many as fit the memory
    budget, and on CPU at most ``CPU_CHUNK_PARAMS`` weights per batch."""
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    size = max(1, min(seeds, budget // bytes_per_seed))
    if jax.default_backend() == "cpu":
        n_params = width * dim + depth * width * width + width
        size = max(1, min(size, CPU_CHUNK_PARAMS // n_params))
    return size


def _bytes_per_seed(cfg: _Config, dim: int, n_all: int, steps: int, itemsize: int) -> int:
    n, L, P = cfg.width, cfg.depth, cfg.n_train
    n_params = n * dim + L * n * n + n
    opt_states = {"adam": 2}.get(cfg.optimizer, 1 if cfg.momentum > 0 else 0)
    # params, gradients, updates and new params live together inside one step
    param_bytes = (4 + opt_states) * n_params
    act_bytes = 6 * (L + 1) * n * n_all
    out_bytes = (steps + 1) * (3 * (L + 1) * P * P + P * P + 2 * n_all)
    k = len(cfg.two_time_layers)
    tt_bytes = k * (steps + 1) * (3 * n * P + 3 * (steps + 1) * P * P)
    return itemsize * (param_bytes + act_bytes + out_bytes + tt_bytes)


def estimate_memory(
    *,
    width: int,
    depth: int,
    n_points: int,
    dim: int,
    steps: int,
    seeds: int = 1,
    n_test: int = 0,
    optimizer: str = "gd",
    momentum: float = 0.0,
    two_time_layers=(),
    dtype=jnp.float32,
) -> int:
    """Estimated peak bytes to simulate ``seeds`` networks at once (no chunking).

    What ``simulate`` uses to size its chunks of seeds; nothing is allocated. Per network,
    with ``n = ND + LN² + N`` weights, Q test points and k two-time layers, it counts
    ``itemsize × [(4 + o)·n + 6(L+1)N(P+Q) + (T+1)(3(L+1)P² + P² + 2(P+Q))
    + k(T+1)(3NP + 3(T+1)P²)]``: weights, gradients, updates and new weights (plus o = 2
    optimizer states for Adam, 1 for momentum), activations, the recorded order parameters and
    the two-time features and kernels.

    Args:
        width: N.
        depth: L.
        n_points: P training points.
        dim: D input dimension.
        steps: number of updates T.
        seeds: networks at once.
        n_test: Q test points.
        optimizer: "gd", "sgd" or "adam".
        momentum: heavy-ball coefficient (> 0 adds a state).
        two_time_layers: the layers whose two-time kernels are kept, as in ``simulate``.
        dtype: float32 (the default here) or float64.

    Returns:
        The estimate in bytes, an int proportional to ``seeds``.

    Raises:
        TypeError: ``dtype`` is not a NumPy dtype. The other arguments are not validated.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> dmft.estimate_memory(width=16, depth=2, n_points=3, dim=4, steps=3, seeds=4)
        57856
        >>> dmft.estimate_memory(width=16, depth=2, n_points=3, dim=4, steps=3, dtype=np.float64)
        28928
    """
    cfg = _Config(
        width,
        depth,
        None,
        "depth-mup",
        0.5,
        optimizer,
        momentum,
        False,
        tuple(two_time_layers),
        n_points,
    )
    per = _bytes_per_seed(cfg, dim, n_points + n_test, steps, np.dtype(dtype).itemsize)
    return per * seeds


def simulate(
    X,
    y,
    *,
    width: int,
    depth: int,
    activation="relu",
    beta0=1.0,
    gamma0=1.0,
    eta0=0.05,
    steps: int,
    seeds: int = 1,
    seed: int = 0,
    parameterization: str = "depth-mup",
    alpha: float = 0.5,
    dynamics: str = "gd",
    t_max=None,
    substeps: int = 1,
    optimizer: str = "gd",
    batch_size: int | None = None,
    batch_seed: int = 0,
    momentum: float = 0.0,
    center: bool = False,
    X_test=None,
    y_test=None,
    two_time_layers=(),
    dtype=None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    throw: bool = True,
    progress: bool | None = None,
    return_params: bool = False,
) -> SimulationResult:
    """Train an ensemble of finite residual networks (SPEC §1) and record order parameters.

    Each network is ``h¹ = W⁰x/√D``, ``hˡ⁺¹ = hˡ + (β₀/L^α) Wˡφ(hˡ)/√N``,
    ``f = w·φ(h^{L+1})/(γ₀N)`` in ``"depth-mup"`` (see ``dmft.parameterization`` for
    ``"mup"`` and ``"sp"``), trained on ``1/(2P) Σ (y − f)²`` with full-batch GD, minibatch SGD
    (``batch_size``), heavy-ball momentum (``momentum``) or Adam, at the per-layer learning rates
    of SPEC §1. Seeds are vmapped, in chunks that fit ``memory_budget``.

    Args:
        X: training inputs (P, D).
        y: targets (P,).
        width: N >= 1.
        depth: L >= 1 residual blocks.
        activation: "linear", "relu", "tanh" or an elementwise callable.
        beta0: branch scale β₀ >= 0 (Python or JAX scalar).
        gamma0: feature-learning strength γ₀ > 0 (Python or JAX scalar).
        eta0: base learning rate η₀ >= 0 (Python or JAX scalar).
        steps: number of updates T; every field has T+1 time points.
        seeds: ensemble size.
        seed: the ensemble's random seed (member i uses split i).
        parameterization: "depth-mup", "mup" or "sp".
        alpha: branch exponent in [1/2, 1].
        dynamics: "gd" (discrete steps of ``optimizer``) or "flow": gradient flow
            ``dθ/dτ = −lr ∇loss`` (SPEC §4, the rates of SPEC §1 with η₀ as the time unit) on
            [0, t_max], recorded at ``steps + 1`` grid points and integrated by Heun's method
            (second order) with ``substeps`` steps per grid interval. ``eta0`` is unused.
        t_max: final time of the flow (> 0).
        substeps: Heun steps per grid interval (>= 1).
        optimizer: "gd" (also "sgd") or "adam".
        batch_size: points per step (None: full batch); batches from
            ``dmft.batch_schedule`` with ``batch_seed``.
        momentum: heavy-ball coefficient in [0, 1) (GD only).
        center: train ``f(θ) − f(θ₀)`` instead of ``f`` (SPEC §7).
        X_test: optional test inputs (Q, D).
        y_test: optional test targets (Q,).
        two_time_layers: layers ℓ in 1..L+1 whose two-time kernels Φˡ(t,s), Gˡ(t,s) are kept.
        dtype: float32 or float64 (default: JAX's default float).
        chunk_size: seeds per compiled batch (default: as many as fit ``memory_budget`` bytes,
            and on CPU at most about 4M weights per batch, which streams faster).
        memory_budget: bytes one chunk of seeds may use, by ``dmft.estimate_memory``
            (default 2 GiB).
        throw: raise ``dmft.DivergenceError`` if a loss or NTK becomes non-finite; with False the
            result's ``status`` and ``diverged_step`` say so instead.
        progress: show a progress bar over training steps (of every chunk of seeds). None (default):
            only when standard error is a terminal outside CI; never inside ``jit``/``vmap``.
        return_params: also return the trained parameters (``result.params``, seeds first).

    Returns:
        ``dmft.SimulationResult`` with a leading seeds axis.

    Raises:
        ValueError: bad input, before any compilation.
        TypeError: bad input, before any compilation.
        DivergenceError: a non-finite loss or NTK, when ``throw``.

    Examples:
        Four linear networks of width 16 and depth 2 on three orthonormal points (Kx = I),
        three steps; with ``center=True`` the output starts at 0, so ``loss(0) = Σ y²/(2P)``:

        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> res = dmft.simulate(X, y, width=16, depth=2, activation="linear", steps=3, seeds=4,
        ...                     center=True)
        >>> res.loss.shape, res.predictions.shape, res.ntk.shape, res.phi_kernel.shape
        ((4, 4), (4, 4, 3), (4, 4, 3, 3), (4, 3, 4, 3, 3))
        >>> bool(np.all(res.loss[:, 0] == 0.5)), res.status
        (True, 'ok')
        >>> res.mean("loss").shape, res.stderr("loss").shape
        ((4,), (4,))
    """
    start = time.perf_counter()
    X, y = check_data(X, y)
    P, D = X.shape
    width = check_int("width", width, minimum=1)
    seeds = check_int("seeds", seeds, minimum=1)
    check_int("seed", seed, minimum=0)
    check_int("batch_seed", batch_seed, minimum=0)
    common = check_common(
        depth=depth,
        activation=activation,
        beta0=beta0,
        gamma0=gamma0,
        eta0=eta0,
        alpha=alpha,
        parameterization=parameterization,
        momentum=momentum,
        batch_size=batch_size,
        n_points=P,
        steps=steps,
    )
    depth, steps, act = common["depth"], common["steps"], common["activation"]
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {optimizer!r}")
    if dynamics not in ("gd", "flow"):
        raise ValueError(f"`dynamics` must be 'gd' or 'flow', got {dynamics!r}")
    flow = dynamics == "flow"
    if flow:
        check_flow(t_max=t_max, steps=steps, batch_size=batch_size, momentum=momentum)
        substeps = check_int("substeps", substeps, minimum=1)
        if optimizer not in ("gd", "sgd"):
            raise ValueError(
                f"dynamics='flow' integrates gradient flow; `optimizer` must be 'gd', got {optimizer!r}"
            )
    elif t_max is not None:
        raise ValueError("`t_max` applies to dynamics='flow' only; gradient descent runs `steps`")
    if optimizer == "adam" and momentum != 0:
        raise ValueError("`momentum` applies to optimizer='gd'; Adam has its own moments")
    if (X_test is None) != (y_test is None):
        raise ValueError("`X_test` and `y_test` must be given together")
    if X_test is not None:
        X_test, y_test = check_data(X_test, y_test, x_name="X_test", y_name="y_test", dim=D)
    layers = tuple(int(check_int("two_time_layers", l, minimum=1)) for l in two_time_layers)
    if any(l > depth + 1 for l in layers):
        raise ValueError(f"`two_time_layers` entries must be in [1, {depth + 1}], got {layers}")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    dt = resolve_dtype(dtype)

    cfg = _Config(
        width,
        depth,
        act,
        parameterization,
        float(alpha),
        "adam" if optimizer == "adam" else "gd",
        float(momentum),
        bool(center),
        layers,
        P,
        bool(return_params),
        substeps if flow else 0,
        progress_bar.enabled(progress, eta0, beta0, gamma0, X, y),
    )
    n_all = P + (0 if X_test is None else X_test.shape[0])
    if chunk_size is None:
        per_seed = _bytes_per_seed(cfg, D, n_all, steps, dt.itemsize)
        chunk_size = default_chunk_size(
            seeds=seeds,
            bytes_per_seed=per_seed,
            width=width,
            depth=depth,
            dim=D,
            memory_budget=memory_budget,
        )
    if check_only():
        return None
    n_chunks = math.ceil(seeds / chunk_size)
    chunk_size = math.ceil(seeds / n_chunks)  # balance chunks; padding < n_chunks

    X_all = X if X_test is None else np.concatenate([X, X_test])
    X_all = jnp.asarray(X_all, dt)
    yj = jnp.asarray(y, dt)
    ytj = None if y_test is None else jnp.asarray(y_test, dt)
    masks = jnp.asarray(batch_schedule(P, batch_size, steps, batch_seed), dt)
    if flow:  # the learning rates carry the Heun step dτ in place of η₀
        eta0 = t_max / (steps * substeps)
    phys = [jnp.asarray(v, dt) for v in (eta0, beta0, gamma0)]

    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    pad = n_chunks * chunk_size - seeds
    if pad:
        keys = jnp.concatenate([keys, jax.random.split(jax.random.PRNGKey(seed + 1), pad)])
    parts = []
    bar = progress_bar.bar(n_chunks * steps, f"networks N={width} L={depth}", cfg.progress)
    with bar:
        for c in range(n_chunks):
            # full-precision products (GPUs default float32 products to TF32, ~1e-3 relative)
            with jax.default_matmul_precision("highest"):
                chunk = _run_chunk(
                    keys[c * chunk_size : (c + 1) * chunk_size], X_all, yj, ytj, masks, *phys, cfg
                )
            parts.append(jax.tree_util.tree_map(np.asarray, chunk))
    out = jax.tree_util.tree_map(lambda *a: np.concatenate(a)[:seeds], *parts)

    # a network diverges where its loss, predictions or NTK stop being finite: the NTK can
    # overflow while the loss is still finite (at initialisation, or with eta0 = 0)
    finite = (
        np.isfinite(out["loss"])
        & np.all(np.isfinite(out["predictions"]), axis=2)
        & np.all(np.isfinite(out["ntk"]), axis=(2, 3))
    )
    diverged_step = np.where(finite.all(axis=1), -1, np.argmin(finite, axis=1)).astype(np.int32)
    settings = dict(
        width=width,
        depth=depth,
        activation=act.name,
        beta0=_num(beta0),
        gamma0=_num(gamma0),
        eta0=None if flow else _num(eta0),
        steps=steps,
        seeds=seeds,
        seed=seed,
        parameterization=parameterization,
        alpha=float(alpha),
        optimizer=optimizer,
        batch_size=batch_size,
        batch_seed=batch_seed,
        momentum=float(momentum),
        center=bool(center),
        dtype=dt.name,
        dynamics=dynamics,
    )
    if flow:
        settings.update(t_max=_num(t_max), substeps=substeps)
    result = SimulationResult(
        loss=out["loss"],
        predictions=out["predictions"],
        ntk=out["ntk"],
        phi_kernel=out["phi_kernel"],
        g_kernel=out["g_kernel"],
        h_kernel=out["h_kernel"],
        phi_two_time=out.get("phi_two_time"),
        g_two_time=out.get("g_two_time"),
        h_two_time=out.get("h_two_time"),
        test_loss=out.get("test_loss"),
        test_predictions=out.get("test_predictions"),
        diverged_step=diverged_step,
        params=out.get("params"),
        two_time_layers=layers,
        settings=tuple(settings.items()),
    )
    if throw:
        result.raise_if_diverged()
    object.__setattr__(result, "_timings", {"wall_seconds": time.perf_counter() - start})
    return result


def _num(x):
    try:
        return float(x)
    except TypeError:
        return repr(x)
