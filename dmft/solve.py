"""``solve_dmft``: the N → ∞ DMFT of a depth-μP ResNet at finite depth (SPEC §3)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

from dmft import cache, linear_closure, monte_carlo
from dmft import progress as progress_bar
from dmft.errors import ConvergenceError, DivergenceError
from dmft.io import load, save
from dmft.network import input_kernel, ntk_from_kernels
from dmft.results import Solution, depth_relative_error
from dmft.schedule import batch_schedule
from dmft.settings import (
    check_common,
    check_data,
    check_depth_ladder,
    check_flow,
    check_int,
    check_only,
    check_scalar,
    is_traced,
    resolve_dtype,
)

DYNAMICS = ("gd", "flow")
FLOW_ORDERS = (1, 2)
DEFAULT_DEPTHS = (4, 8, 16, 32)
METHODS = ("auto", "exact", "monte-carlo")
SAMPLINGS = ("sobol", "random")
DEFAULT_MEMORY_LIMIT = 8 * 2**30
# Keywords of `simulate` that describe finite networks only; accepted and ignored so that one
# dict of settings can drive both.
SIMULATOR_ONLY = (
    "width",
    "seeds",
    "center",
    "chunk_size",
    "memory_budget",
    "return_params",
    "two_time_layers",
    "substeps",
)

_linear = jax.jit(
    linear_closure.solve_linear,
    static_argnames=("depth", "steps", "alpha", "momentum", "responses", "progress"),
)


def _mc_replica(Kx, y, omega, eta0, beta0, gamma0, key, index, *, n_train, **kw):
    """Monte Carlo replica ``index`` (sources from ``fold_in(key, index)``): its kernels and
    predictions, and its (2, T+1) training and test losses."""
    out = monte_carlo.solve_mc(
        Kx, y, omega, eta0, beta0, gamma0, jax.random.fold_in(key, index), **kw
    )
    err = (y[None, :] - out["f"]) ** 2
    loss = jnp.stack(
        [0.5 * jnp.mean(err[:, :n_train], axis=1), 0.5 * jnp.mean(err[:, n_train:], axis=1)]
    )
    return out, loss


def _mc_replicas(Kx, y, omega, eta0, beta0, gamma0, key, *, n_train, replicas, **kw):
    """Run ``replicas`` independent Monte Carlo solves one after another (memory of one) and
    return the mean kernels and predictions with the per-replica training and test losses."""
    dt = Kx.dtype

    def one(i):
        return _mc_replica(Kx, y, omega, eta0, beta0, gamma0, key, i, n_train=n_train, **kw)

    shapes = jax.eval_shape(one, 0)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes[0])
    T1 = shapes[1].shape[-1]

    def body(i, carry):
        acc, losses = carry
        out, loss_i = one(i)
        acc = jax.tree.map(lambda a, b: a + b / replicas, acc, out)
        return acc, losses.at[i].set(loss_i)

    losses = jnp.zeros((replicas, 2, T1), dt)
    return lax.fori_loop(0, replicas, body, (zeros, losses))


_MC_STATIC = (
    "n_train",
    "act",
    "depth",
    "steps",
    "alpha",
    "momentum",
    "samples",
    "rtol",
    "responses",
    "progress",
    "mesh",
    "moment_match",
    "sampling",
)
# one replica at a time, for a checkpointed solve that saves each finished replica
_monte_carlo_replica = jax.jit(_mc_replica, static_argnames=_MC_STATIC)
_monte_carlo = jax.jit(_mc_replicas, static_argnames=(*_MC_STATIC, "replicas"))


def _two_time(K, steps, n_all, n_train):
    """(layers, M, M) over (t, μ) pairs → (layers, T+1, T+1, P, P) over training points."""
    K = K.reshape(K.shape[0], steps + 1, n_all, steps + 1, n_all).transpose(0, 1, 3, 2, 4)
    return K[..., :n_train, :n_train]


def _setting(x):
    if is_traced(x):
        return "traced"
    try:
        return float(x)
    except TypeError:
        return repr(x)


def _ladder_weights(depths):
    """Richardson weights at 1/L → 0 for a polynomial in 1/L through every depth: the Lagrange
    basis of the points x_k = 1/L_k evaluated at x = 0."""
    x = [1.0 / d for d in depths]
    return [
        float(np.prod([x[j] / (x[j] - x[k]) for j in range(len(x)) if j != k]))
        for k in range(len(x))
    ]


def solve_dmft(
    X,
    y,
    *,
    depth,
    activation="relu",
    beta0=1.0,
    gamma0=1.0,
    eta0=0.05,
    steps: int,
    alpha: float = 0.5,
    dynamics: str = "gd",
    t_max=None,
    flow_order: int = 2,
    depths=None,
    parameterization: str = "depth-mup",
    optimizer: str = "gd",
    batch_size: int | None = None,
    batch_seed: int = 0,
    momentum: float = 0.0,
    X_test=None,
    y_test=None,
    responses: bool = True,
    method: str = "auto",
    samples: int | None = None,
    replicas: int = 4,
    sampling: str = "sobol",
    seed: int = 0,
    tol: float = 0.05,
    dtype=None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    throw: bool = True,
    progress: bool | None = None,
    checkpoint=None,
    devices=None,
    **simulator_only,
) -> Solution:
    """Solve the infinite-width DMFT of SPEC §3 at depth L, or its L → ∞ limit.

    The single-site system (b = β₀/L^α, κ = L^{2α−1}, ε_ν(t,s) = η₀γ₀ m(t−s) ω_ν(s) Δ_ν(s)):

        h¹(t)   = u⁰ + Σ_{s<t} Kx ε(t,s) g¹(s)
        hˡ⁺¹(t) = hˡ(t) + b[uˡ(t) + Σ_s Aˡ(t,s) gˡ⁺¹(s)] + b²κ Σ_s Φˡ(t,s) ε(t,s) gˡ⁺¹(s)
        gˡ(t)   = gˡ⁺¹(t) + b φ'(hˡ(t))[rˡ(t) + Σ_s Bˡ(t,s) φ(hˡ(s)) + bκ Σ_s Gˡ⁺¹(t,s) ε(t,s) φ(hˡ(s))]

    closed by Φˡ = E[φ(hˡ)φ(hˡ)ᵀ], Gˡ = E[gˡgˡᵀ] and the responses Aˡ, Bˡ, with predictions by
    the exact discrete-time formula ``f(t) = E[∂φ(h^{L+1}(t))/∂w₀]/γ₀ + Σ_{s<t} ε(t,s)Φ^{L+1}(t,s)/γ₀``.
    For ``activation="linear"`` every variable is linear in the Gaussian sources and the system
    is solved exactly by one causal time-march (``dmft.linear_closure``); no sampling. Any
    other activation is solved by the same causal march over ``samples`` Monte Carlo sites
    (``dmft.monte_carlo``), with the responses by Gaussian integration by parts (exact for
    ReLU's kink) and ``replicas`` independent replicas giving the Monte Carlo error. Nothing is
    iterated, so there is no damping or iteration limit to tune: accuracy is set by ``samples``.

    Gradient flow (``dynamics="flow"``, SPEC §4) runs on the grid ``τ_k = k·t_max/steps``. The
    memory integrals ``∫₀^τ ds`` are discretised by the left-endpoint rule, which is the
    discrete-time system above with η₀ = dτ (first order in dτ); ``flow_order=2`` (the default)
    also solves with dτ/2 and extrapolates, ``2·q(dτ/2) − q(dτ)`` (Richardson), which is second
    order. ``time_error`` is then ``|q − q(dτ/2)|``, an estimate of the first-order solve's error
    (the returned second-order value is more accurate than that). Responses are returned as
    densities (Aˡ/dτ), so they converge as dτ → 0.

    Infinite depth (``depth=math.inf``, SPEC §5) solves the ladder ``depths`` (default 4, 8, 16, 32)
    and extrapolates every field to 1/L → 0 with the polynomial in 1/L through all of them
    (Richardson: error O(L⁻ᵏ) for k depths). ``depth_error`` is the difference from the same
    extrapolation without the shallowest depth; ``ladder`` holds the per-depth solutions. Layer
    kernels are returned on the shallowest depth's grid of τ = (ℓ−1)/L₀ ∈ [0, 1] (every depth must
    be a multiple of the first); responses, which vanish per layer as L → ∞, are not extrapolated.

    Args:
        X: training inputs (P, D).
        y: targets (P,).
        depth: L >= 1, or ``math.inf`` for the infinite-depth limit.
        activation: "linear", "relu", "tanh" or an elementwise JAX callable.
        beta0: β₀ >= 0; a Python or JAX scalar, so ``jax.vmap`` sweeps it and new values do
            not recompile.
        gamma0: γ₀ > 0; a Python or JAX scalar, as ``beta0``.
        eta0: η₀ >= 0; a Python or JAX scalar, as ``beta0``. Unused by gradient flow.
        steps: number of updates T (gradient flow: time intervals of the grid).
        alpha: branch exponent in [1/2, 1].
        dynamics: "gd" (discrete-time gradient descent, with ``batch_size`` for SGD) or "flow"
            (gradient flow on [0, t_max]).
        t_max: final time τ of gradient flow (> 0; only with ``dynamics="flow"``).
        flow_order: 1 (left-endpoint memory sums) or 2 (Richardson-extrapolated; default).
        depths: the depth ladder for ``depth=math.inf``: at least two increasing depths, each a
            multiple of the first. Default (4, 8, 16, 32).
        parameterization: must be "depth-mup" (the DMFT's setting).
        optimizer: must be "gd"/"sgd" (the DMFT's setting).
        batch_size: minibatch size; minibatches come from ``dmft.batch_schedule``, the
            same ones ``simulate`` uses for the same ``batch_seed``.
        batch_seed: seed of the minibatches (see ``batch_size``).
        momentum: heavy-ball coefficient μ in [0, 1).
        X_test: optional test inputs; the test set's fields follow the same equations
            without driving learning.
        y_test: optional test targets (with ``X_test``).
        responses: keep the response terms Aˡ, Bˡ (False: the ablation of SPEC §3).
        method: "auto" (exact for linear, Monte Carlo otherwise), "exact" (linear only) or
            "monte-carlo" (any activation; for linear networks, to check the sampler).
        samples: Monte Carlo sites per replica, at least 2·(steps+1)·(training + test points)
            (with ``flow_order=2``, 2·(2·steps+1)·points); default max(8192, twice that bound).
            With ``sampling="random"`` the error falls as samples^−1/2; with "sobol" it can
            fall faster (measured slopes: docs/solver.md), and the points are most even when
            ``samples`` is a power of two.
        replicas: independent Monte Carlo replicas (>= 2); their spread gives ``loss_error``
            and the reported fields are their mean. They run one after another, so memory is
            that of one replica.
        sampling: the Monte Carlo sources: "sobol" (default; every replica a freshly
            scrambled Sobol' sequence, randomized quasi-Monte Carlo, ``dmft.sobol``) or
            "random" (independent pseudo-random normals). Both are unbiased and ``loss_error``
            is valid for both; Sobol' points err less (measured gains: docs/solver.md).
        seed: seed of the Monte Carlo sources.
        tol: largest accepted relative Monte Carlo standard error of the loss; above it the
            solution has ``converged=False`` (and ``throw`` raises ``dmft.ConvergenceError``).
            With ``depth=math.inf`` and three or more ``depths``, also the largest accepted
            ``depth_error`` relative to the loss (where it exceeds three Monte Carlo standard
            errors): a ladder whose limit moves by more when its shallowest depth is dropped is
            not in its 1/L regime.
        dtype: float32 or float64 (default: JAX's default float).
        memory_limit: refuse, before compiling, a solve whose estimated memory exceeds this.
        throw: raise ``dmft.DivergenceError`` on a non-finite loss or NTK and
            ``dmft.ConvergenceError`` above ``tol``; with False the solution's ``status``,
            ``converged`` and ``diverged_step`` report them.
        progress: show a progress bar (time steps done, rate, time left, and after each
            depth of a ladder its loss and Monte Carlo error). None (default): only when
            standard error is a terminal outside CI; never inside ``jit``/``vmap``.
        checkpoint: a folder. Each finished solve (every depth of a ``depth=math.inf``
            ladder, or the one depth) is saved there, atomically, keyed by the settings, the
            data and the library's code; calling again with the same arguments loads the
            finished ones instead of solving them, so a killed ladder resumes where it stopped.
            Not inside ``jit``/``vmap``.
        devices: the devices the Monte Carlo sites are spread over: None (default) for every
            local device of JAX's default backend, an int n for the first n of them, or a list
            of ``jax.Device``. With more than one, ``samples`` must be a multiple of their
            number (the default is rounded up to one). Each replica's sites are split evenly;
            the averages over sites are summed across devices, so the result equals the
            one-device result up to the order of floating-point sums. The exact linear path
            has no sites and runs on the default device.
        **simulator_only: ``width``, ``seeds``, ``center``, … are accepted and ignored, so one
            dict of settings drives both ``simulate`` and ``solve_dmft``.

    Returns:
        ``dmft.Solution``.

    Raises:
        ValueError: bad input, before compiling.
        TypeError: bad input, before compiling.
        DivergenceError: when ``throw`` and the loss becomes non-finite.
        ConvergenceError: when ``throw`` and the Monte Carlo error (or, for
            ``depth=math.inf``, the depth extrapolation's error) exceeds ``tol``.

    Examples:
        The lazy limit of a linear network on one point reproduces the closed form of SPEC §6,
        K = 2a^L + β₀²a^{L−1} with a = 1 + β₀²/L (6.8359375 for L = 4):

        >>> import numpy as np
        >>> import dmft
        >>> sol = dmft.solve_dmft(np.ones((1, 1)), np.ones(1), depth=4, activation="linear",
        ...                       gamma0=1e-4, eta0=0.05, steps=3)
        >>> round(float(sol.ntk[0, 0, 0]), 4)
        6.8359

        A ReLU network by Monte Carlo, with the standard error of its loss:

        >>> X = np.eye(2); y = np.array([1.0, -1.0])
        >>> sol = dmft.solve_dmft(X, y, depth=2, activation="relu", eta0=0.1, steps=3,
        ...                       samples=1024)
        >>> sol.method, sol.loss.shape, bool(sol.loss_error[-1] < 0.05 * sol.loss[-1])
        ('monte-carlo', (4,), True)
    """
    start = time.perf_counter()
    unknown = set(simulator_only) - set(SIMULATOR_ONLY)
    if unknown:
        raise TypeError(f"solve_dmft() got unexpected keyword arguments {sorted(unknown)}")
    X, y = check_data(X, y)
    P, D = X.shape
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
        allow_inf_depth=True,
    )
    depth, steps, act = common["depth"], common["steps"], common["activation"]
    check_int("batch_seed", batch_seed, minimum=0)
    if parameterization != "depth-mup":
        raise ValueError(
            f"`parameterization` must be 'depth-mup' for the DMFT (its limit is what the solver "
            f"computes), got {parameterization!r}; simulate 'mup'/'sp' with dmft.simulate"
        )
    if optimizer not in ("gd", "sgd"):
        raise ValueError(
            f"`optimizer` must be 'gd' or 'sgd' for the DMFT, got {optimizer!r} "
            "(Adam is available in dmft.simulate only)"
        )
    if dynamics not in DYNAMICS:
        raise ValueError(f"`dynamics` must be one of {DYNAMICS}, got {dynamics!r}")
    flow = dynamics == "flow"
    if flow:
        check_flow(t_max=t_max, steps=steps, batch_size=batch_size, momentum=momentum)
        if flow_order not in FLOW_ORDERS:
            raise ValueError(f"`flow_order` must be one of {FLOW_ORDERS}, got {flow_order!r}")
    elif t_max is not None:
        raise ValueError("`t_max` applies to dynamics='flow' only; gradient descent runs `steps`")
    if depth == math.inf:
        depths = DEFAULT_DEPTHS if depths is None else depths
        depths = check_depth_ladder(depths)
    elif depths is not None:
        raise ValueError("`depths` is the ladder for depth=math.inf; give one or the other")
    if (X_test is None) != (y_test is None):
        raise ValueError("`X_test` and `y_test` must be given together")
    if X_test is not None:
        X_test, y_test = check_data(X_test, y_test, x_name="X_test", y_name="y_test", dim=D)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    if method == "exact" and not act.is_linear:
        raise ValueError(
            f"method='exact' needs activation='linear' (got {act.name!r}); nonlinear activations "
            "are solved by method='monte-carlo'"
        )
    exact = act.is_linear and method != "monte-carlo"
    n_all = P + (0 if X_test is None else X_test.shape[0])
    steps_max = 2 * steps if (flow and flow_order == 2) else steps
    depth_max = depths[-1] if depth == math.inf else depth
    M = (steps_max + 1) * n_all
    # the sampling options are checked on the exact path too, where they are unused: a typo
    # there would otherwise pass silently and fail later when the activation changes
    devs = _resolve_devices(devices)

    def whole_devices(n):  # n rounded up to a multiple of the number of devices
        return -(-n // len(devs)) * len(devs)

    if samples is None and not exact:
        samples = whole_devices(max(8192, 4 * M))
    if samples is not None:
        check_int("samples", samples, minimum=2 * M if not exact else 2)
    if not exact and samples % len(devs):
        raise ValueError(
            f"`samples` = {samples} must be a multiple of the number of devices ({len(devs)}) "
            f"so the sites split evenly; use samples={whole_devices(samples)}, or choose `devices`"
        )
    check_int("replicas", replicas, minimum=2)
    if sampling not in SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {sampling!r}")
    check_int("seed", seed, minimum=0)
    check_scalar("tol", tol, low=0.0, low_open=True)
    dt = resolve_dtype(dtype)
    if exact:
        estimate = linear_closure.memory_bytes(
            depth=depth_max, steps=steps_max, n_points=n_all, itemsize=dt.itemsize
        )
    else:
        estimate = monte_carlo.memory_bytes(
            depth=depth_max, steps=steps_max, n_points=n_all, samples=samples, itemsize=dt.itemsize
        )
    if estimate > memory_limit:
        fewer = "" if exact else "`samples`, "
        raise ValueError(
            f"this solve needs about {estimate / 2**30:.2f} GiB, over `memory_limit` = "
            f"{memory_limit / 2**30:.2f} GiB; reduce {fewer}`steps`, `depth` or the number of "
            "points, use dtype='float32', or raise `memory_limit`"
        )

    show = progress_bar.enabled(progress, eta0, beta0, gamma0, X, y)
    if checkpoint is not None and any(is_traced(v) for v in (eta0, beta0, gamma0)):
        raise ValueError(
            "`checkpoint` needs concrete `eta0`, `beta0` and `gamma0`; it cannot be used inside "
            "jit/vmap (checkpoint each call of a sweep instead)"
        )
    if check_only():
        return None

    X_all = X if X_test is None else np.concatenate([X, X_test])
    y_all = y if y_test is None else np.concatenate([y, y_test])
    problem = dict(
        Kx=input_kernel(jnp.asarray(X_all, dt)),
        y=y,
        y_all=y_all,
        y_test=y_test,
        n_train=P,
        batch_size=batch_size,
        batch_seed=batch_seed,
        act=act,
        exact=exact,
        samples=samples,
        replicas=replicas,
        sampling=sampling,
        seed=seed,
        tol=tol,
        dt=dt,
        beta0=beta0,
        gamma0=gamma0,
        alpha=float(alpha),
        momentum=float(momentum),
        responses=bool(responses),
        progress=show,
        mesh=None if exact or len(devs) == 1 else Mesh(np.array(devs), ("sites",)),
    )
    settings = dict(
        depth=depth,
        activation=act.name,
        beta0=_setting(beta0),
        gamma0=_setting(gamma0),
        eta0=None if flow else _setting(eta0),
        steps=steps,
        alpha=float(alpha),
        dynamics=dynamics,
        batch_size=batch_size,
        batch_seed=batch_seed,
        momentum=float(momentum),
        responses=bool(responses),
        dtype=dt.name,
    )
    if flow:
        settings.update(t_max=_setting(t_max), flow_order=flow_order)
    if depth == math.inf:
        settings.update(depths=depths)
    if not exact:
        settings.update(
            samples=samples, replicas=replicas, sampling=sampling, seed=seed, devices=len(devs)
        )
    if not exact or depth == math.inf:
        settings.update(tol=float(tol))

    finished = _Checkpoint(checkpoint, settings, X, y, X_test, y_test)
    problem["store"] = finished

    def at_depth(L, part):
        done = finished.get(L)
        if done is not None:
            finished.drop_units(L)  # left by a run killed between saving the solve and this
            bar.update(marches * (1 if exact else replicas))
            return done
        if not flow:
            sol = _solve_once(problem, L, eta0, steps, part=part)
        else:
            sol = _solve_flow(problem, L, t_max, steps, flow_order, part=part)
        finished.put(L, sol)
        return sol

    # one bar tick per time step of every march (and of every Monte Carlo replica)
    marches = (steps + 1) + (2 * steps + 1 if flow and flow_order == 2 else 0)
    total = marches * (1 if exact else replicas) * (len(depths) if depth == math.inf else 1)
    desc = f"DMFT {act.name} L={'∞' if depth == math.inf else depth}"
    with progress_bar.bar(total, desc, show) as bar:
        if depth == math.inf:
            ladder = []
            for k, L in enumerate(depths):
                member = {key: v for key, v in settings.items() if key != "depths"}
                member["depth"] = L
                rung = at_depth(L, part=2 * k)
                ladder.append(dataclasses.replace(rung, settings=tuple(member.items())))
                if show:
                    bar.set_postfix_str(f"L={L}: {_summary(rung)}")
            solution = _depth_limit(problem, depths, ladder)
        else:
            solution = at_depth(depth, part=0)
        if show:
            bar.set_postfix_str(_summary(solution))
    solution = dataclasses.replace(
        solution, memory_estimate=int(estimate), settings=tuple(settings.items())
    )
    if throw and not is_traced(solution.diverged_step):
        if int(solution.diverged_step) >= 0:
            raise DivergenceError(solution.status, step=int(solution.diverged_step))
        if not bool(solution.converged):
            residual = float(np.max(solution.residuals))
            if solution.depth_error is not None:
                residual = max(residual, solution.depth_residual)
            raise ConvergenceError(solution.status, iterations=1, residual=residual)
    if not is_traced(solution.loss):
        object.__setattr__(solution, "_timings", {"wall_seconds": time.perf_counter() - start})
    return solution


def _resolve_devices(devices) -> list:
    """The devices of ``solve_dmft(devices=...)``, checked (see its docstring)."""
    local = jax.local_devices()
    if devices is None:
        return local
    if isinstance(devices, bool) or not isinstance(devices, (int, list, tuple)):
        raise TypeError(
            f"`devices` must be None, an int or a list of jax.Device, got {type(devices).__name__}"
        )
    if isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"`devices` must be in [1, {len(local)}] (the local devices: {local}), got {devices}"
            )
        return local[:devices]
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("`devices` as a list must hold at least one jax.Device, and only those")
    if len(set(devices)) != len(devices):
        raise ValueError("`devices` lists a device twice")
    return list(devices)


class _Checkpoint:
    """Finished solves (each depth of a ladder, or the one depth) saved under ``folder``, keyed by
    the settings, the data and the library's code, so an interrupted call resumes from them;
    within a Monte Carlo solve, each finished replica (a unit), removed once its solve is saved."""

    def __init__(self, folder, settings, *arrays):
        self.folder = None if folder is None else pathlib.Path(folder)
        if self.folder is not None:
            data = cache.array_digest(*(np.asarray(a) for a in arrays if a is not None))
            self.key = cache.make_key(
                {"settings": settings, "data": data, "code": cache.code_version()}
            )

    @property
    def active(self) -> bool:
        return self.folder is not None

    def _unit_path(self, unit):
        return self.folder / f"solve-{self.key}-{unit}.npz"

    def get_unit(self, unit):
        path = self._unit_path(unit)
        if not path.exists():
            return None
        try:
            return cache.read_npz(path)[0]
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring an unreadable checkpoint: {err}", stacklevel=3)
            return None

    def put_unit(self, unit, arrays):
        cache.write_npz(self._unit_path(unit), arrays)

    def drop_units(self, depth):
        if self.folder is not None:
            for path in self.folder.glob(f"solve-{self.key}-L{depth}-T*-part*-replica*.npz"):
                path.unlink(missing_ok=True)

    def _path(self, depth):
        return self.folder / f"solve-{self.key}-L{depth}.npz"

    def get(self, depth):
        if self.folder is None or not self._path(depth).exists():
            return None
        try:
            return load(self._path(depth))
        except (OSError, ValueError) as err:  # damaged by something else: solve it again
            warnings.warn(f"ignoring an unreadable checkpoint: {err}", stacklevel=3)
            return None

    def put(self, depth, solution):
        if self.folder is not None:
            save(solution, self._path(depth))
            self.drop_units(depth)


def _summary(sol) -> str:
    """The final loss and the residual the solve is judged on, for a progress bar."""
    loss = float(np.asarray(sol.loss)[-1])
    if sol.method == "monte-carlo":
        return f"loss {loss:.4g}, MC rel. error {float(np.max(np.asarray(sol.residuals))):.2g}"
    return f"loss {loss:.4g}"


def _solve_once(problem, depth, eta0, steps, *, part, time_ids=None):
    """One causal march at finite depth for discrete time (``eta0`` may be dτ); never throws.
    ``time_ids`` names the times for the Monte Carlo sources (see ``monte_carlo.solve_mc``)."""
    p = problem
    P, dt, Kx = p["n_train"], p["dt"], p["Kx"]
    n_all = Kx.shape[0]
    omega = np.zeros((steps, n_all))
    mask = batch_schedule(P, p["batch_size"], steps, p["batch_seed"])
    omega[:, :P] = mask / mask.sum(axis=1, keepdims=True)
    scalars = tuple(jnp.asarray(v, dt) for v in (eta0, p["beta0"], p["gamma0"]))
    common_static = dict(depth=depth, steps=steps, alpha=p["alpha"], momentum=p["momentum"])
    exact = p["exact"]
    # Full-precision matrix products: on GPUs float32 products default to TF32 (10-bit
    # mantissa), which breaks the Gram–Schmidt whitening (NaN on an H100) and the closure.
    with jax.default_matmul_precision("highest"):
        out, replica_losses = _march(p, Kx, omega, scalars, common_static, part, time_ids)
    if exact:
        h2 = _two_time(out["Phi"], steps, n_all, P)
        a_resp = _two_time(out["A"], steps, n_all, P)
        b_resp = _two_time(out["B"], steps, n_all, P)
    else:
        h2 = a_resp = b_resp = None
        sem = jnp.std(replica_losses, axis=0, ddof=1) / np.sqrt(p["replicas"])
        loss_error, test_loss_error = sem[0], sem[1]
    phi2 = _two_time(out["Phi"], steps, n_all, P)
    g2 = _two_time(out["G"], steps, n_all, P)
    diag = lambda K: jnp.einsum("ltt...->lt...", K)  # noqa: E731
    phi_k, g_k = diag(phi2), diag(g2)
    h_k = phi_k if exact else out["H"][:, :, :P, :P]
    ntk_block = jnp.asarray(p["beta0"], dt) ** 2 / depth
    ntk = jax.vmap(ntk_from_kernels, in_axes=(None, 1, 1, None))(Kx[:P, :P], phi_k, g_k, ntk_block)
    f = out["f"]
    loss = _loss(p["y"], f[:, :P], dt)
    test_loss = test_pred = None
    if p["y_test"] is not None:
        test_pred = f[:, P:]
        test_loss = _loss(p["y_test"], test_pred, dt)
    if exact:
        loss_error = jnp.zeros_like(loss)
        test_loss_error = None
    elif p["y_test"] is None:
        test_loss_error = None
    return _finish(
        problem,
        dict(
            loss=loss,
            predictions=f[:, :P],
            ntk=ntk,
            phi_kernel=phi_k,
            g_kernel=g_k,
            h_kernel=h_k,
            phi_two_time=phi2,
            g_two_time=g2,
            h_two_time=h2,
            a_response=a_resp,
            b_response=b_resp,
            test_loss=test_loss,
            test_predictions=test_pred,
            loss_error=loss_error,
            test_loss_error=test_loss_error,
            times=eta0 * jnp.arange(steps + 1, dtype=dt),
        ),
    )


def _march(p, Kx, omega, scalars, common_static, part, time_ids=None):
    """The compiled march: exact linear closure, or Monte Carlo replicas with their losses."""
    dt = p["dt"]
    if p["exact"]:
        out = _linear(
            Kx,
            jnp.asarray(p["y_all"], dt),
            jnp.asarray(omega, dt),
            *scalars,
            responses=p["responses"],
            progress=p["progress"],
            **common_static,
        )
        return out, None
    key = jax.random.PRNGKey(p["seed"])
    if part:  # independent sources for each depth of a ladder (a flow's two grids share theirs)
        key = jax.random.fold_in(key, part)
    args = (Kx, jnp.asarray(p["y_all"], dt), jnp.asarray(omega, dt), *scalars, key)
    static = dict(
        n_train=p["n_train"],
        act=p["act"],
        samples=p["samples"],
        sampling=p["sampling"],
        rtol=float(np.sqrt(np.finfo(dt).eps)) ** 1.5,
        responses=p["responses"],
        progress=p["progress"],
        mesh=p["mesh"],
        **common_static,
    )
    if time_ids is not None:
        static["time_ids"] = jnp.asarray(time_ids, jnp.uint32)  # traced, not static
    store = p["store"]
    if not store.active:
        return _monte_carlo(*args, replicas=p["replicas"], **static)
    # checkpointed: one compiled replica at a time, each saved when finished, so a killed
    # solve loses at most the replica it was in (same sum, in the same order, as above)
    acc, losses = None, []
    for i in range(p["replicas"]):
        unit = f"L{common_static['depth']}-T{common_static['steps']}-part{part}-replica{i}"
        saved = store.get_unit(unit)
        if saved is None:
            out, loss_i = _monte_carlo_replica(*args, i, **static)
            saved = {**{k: np.asarray(v) for k, v in out.items()}, "loss": np.asarray(loss_i)}
            store.put_unit(unit, saved)
        elif p["progress"]:
            progress_bar.advance(common_static["steps"] + 1)
        losses.append(jnp.asarray(saved.pop("loss")))
        acc = {k: (0 if acc is None else acc[k]) + jnp.asarray(v) / p["replicas"]
               for k, v in saved.items()}  # fmt: skip
    return acc, jnp.stack(losses)


def _loss(y, predictions, dt):
    """``1/(2P) Σ_μ (y_μ − f_μ)²`` over the last axis, per time step."""
    return 0.5 * jnp.mean((jnp.asarray(y, dt) - predictions) ** 2, axis=-1)


def _finish(problem, fields, converged_parts=True):
    """Build a Solution from its fields: divergence, and convergence judged on the relative
    Monte Carlo error of the loss against ``tol``."""
    dt = problem["dt"]
    loss, loss_error = fields["loss"], fields["loss_error"]
    # diverged where the loss, predictions or NTK stop being finite (the NTK can overflow
    # while the loss is still finite, e.g. with eta0 = 0)
    finite = (
        jnp.isfinite(loss)
        & jnp.all(jnp.isfinite(fields["predictions"]), axis=-1)
        & jnp.all(jnp.isfinite(fields["ntk"]), axis=(-2, -1))
    )
    diverged_step = jnp.where(jnp.all(finite), -1, jnp.argmin(finite)).astype(jnp.int32)
    if problem["exact"]:
        worst = jnp.zeros((), dt)
    else:
        # relative Monte Carlo error of the loss, where the loss is still above rounding
        floor = 1e3 * jnp.finfo(dt).eps * jnp.abs(loss[0])
        worst = jnp.max(jnp.where(loss > floor, loss_error / jnp.maximum(loss, floor), 0.0))
    converged = jnp.logical_and(worst <= problem["tol"], jnp.all(finite))
    converged = jnp.logical_and(converged, converged_parts)
    return Solution(
        **fields,
        converged=converged,
        iterations=jnp.asarray(1),
        residuals=worst[None],
        diverged_step=diverged_step,
        method="linear-exact" if problem["exact"] else "monte-carlo",
    )


# Fields combined linearly by the time-step and depth extrapolations, with their time axes.
_TIME_AXES = {
    "loss": (0,),
    "predictions": (0,),
    "ntk": (0,),
    "test_loss": (0,),
    "test_predictions": (0,),
    "times": (0,),
    "phi_kernel": (1,),
    "g_kernel": (1,),
    "h_kernel": (1,),
    "phi_two_time": (1, 2),
    "g_two_time": (1, 2),
    "h_two_time": (1, 2),
    "a_response": (1, 2),
    "b_response": (1, 2),
}
_LAYER_FIELDS = ("phi_kernel", "g_kernel", "h_kernel", "phi_two_time", "g_two_time", "h_two_time")


def _combine(problem, parts, weights, pick):
    """Σ_k weights[k]·pick(k, name, field of parts[k]) for every field; errors in quadrature
    (exact for independent parts; for the two grids of a flow, which share their sources, an
    overestimate as long as the grids' errors are positively correlated)."""
    fields = {}
    for name in _TIME_AXES:
        arrs = [getattr(s, name) for s in parts]
        picked = [None if a is None else pick(k, name, a) for k, a in enumerate(arrs)]
        if any(a is None for a in picked):
            fields[name] = None
        elif name == "times":
            fields[name] = picked[-1]
        else:
            fields[name] = sum(w * a for w, a in zip(weights, picked, strict=True))
    # The losses are quadratic in the predictions: recompute them from the extrapolated
    # predictions (same order of accuracy), so an extrapolated loss can never be negative.
    dt = problem["dt"]
    if fields["predictions"] is not None:
        fields["loss"] = _loss(problem["y"], fields["predictions"], dt)
    if fields["test_predictions"] is not None:
        fields["test_loss"] = _loss(problem["y_test"], fields["test_predictions"], dt)
    for name in ("loss_error", "test_loss_error"):
        errs = [getattr(s, name) for s in parts]
        fields[name] = (
            None
            if any(e is None for e in errs)
            else jnp.sqrt(
                sum(
                    (w * pick(k, "loss", e)) ** 2
                    for k, (w, e) in enumerate(zip(weights, errs, strict=False))
                )
            )
        )
    ok = jnp.all(jnp.stack([jnp.all(s.converged) for s in parts]))
    return fields, ok


def _solve_flow(problem, depth, t_max, steps, order, *, part):
    """Gradient flow on τ_k = k·dτ: left-endpoint memory sums (discrete time with η₀ = dτ),
    Richardson-extrapolated in dτ for ``order=2``."""
    dtau = jnp.asarray(t_max, problem["dt"]) / steps
    coarse = _solve_once(problem, depth, dtau, steps, part=part, time_ids=_flow_time_ids(steps))
    coarse = _densities(coarse, dtau)
    if order == 1:
        return coarse
    fine = _solve_once(problem, depth, dtau / 2, 2 * steps, part=part,
                       time_ids=_flow_time_ids(2 * steps))  # fmt: skip
    fine = _densities(fine, dtau / 2)

    def pick(k, name, a):
        if k == 0:
            return a
        sl = [slice(None)] * a.ndim
        for ax in _TIME_AXES[name]:
            sl[ax] = slice(None, None, 2)
        return a[tuple(sl)]

    fields, ok = _combine(problem, [coarse, fine], [-1.0, 2.0], pick)
    sol = _finish(problem, fields, ok)
    return dataclasses.replace(sol, time_error=jnp.abs(sol.loss - pick(1, "loss", fine.loss)))


def _flow_time_ids(steps):
    """Names of a flow grid's times for its Monte Carlo sources: the step index. Each time's
    innovation (the part of a source not predicted by its past, see ``dmft.monte_carlo``) is
    then drawn by its index, so solves with the same seed on grids of n and 2n steps share
    their first n + 1 innovations (common random numbers). The sources are smooth in τ, and
    their k-th innovation plays the same part on every grid (value, slope, curvature, …, each
    much smaller than the last), so the grids' sampling noise largely cancels in their
    difference, which is then mostly their step error. Measured (ReLU, P = 1, L = 2, τ ≤ 2,
    16 384 sites × 2 replicas): the first-order errors against 256 steps fall with slope 1.15
    between 8 and 64 steps while one solve's standard error (4e-3) exceeds them. A tighter
    coupling, for measuring orders, is ``dmft.monte_carlo.coarse_innovations``."""
    return np.arange(steps + 1)


def _densities(sol, dtau):
    """Responses of the discrete march carry one factor of the step: return them per unit time."""
    if sol.a_response is None:
        return sol
    return dataclasses.replace(
        sol, a_response=sol.a_response / dtau, b_response=sol.b_response / dtau
    )


def _depth_limit(problem, depths, ladder):
    """Extrapolate the per-depth solutions to 1/L → 0 (Richardson through every depth)."""
    weights = _ladder_weights(depths)

    def pick(k, name, a):
        if name in ("a_response", "b_response"):
            return None
        if name in _LAYER_FIELDS:
            return a[:: depths[k] // depths[0]]
        return a

    fields, ok = _combine(problem, ladder, weights, pick)
    sol = _finish(problem, fields, ok)
    # the same extrapolation without the shallowest depth, for the loss only
    top_pred = sum(
        w * s.predictions for w, s in zip(_ladder_weights(depths[1:]), ladder[1:], strict=True)
    )
    top = _loss(problem["y"], top_pred, problem["dt"])
    time_errors = [s.time_error for s in ladder]
    time_error = None
    if all(e is not None for e in time_errors):
        time_error = jnp.sqrt(sum((w * e) ** 2 for w, e in zip(weights, time_errors, strict=True)))
    depth_error = jnp.abs(sol.loss - top)
    # The ladder is trusted only where dropping its shallowest depth moves the limit by less
    # than `tol` of the loss (or by less than the Monte Carlo noise, which `tol` judges already):
    # rungs outside the 1/L regime (too shallow, or near the stability edge) fail it. With two
    # depths the limit without the shallowest is the deepest solve itself, so depth_error is
    # the whole 1/L correction, not an error of the extrapolation: nothing to judge.
    converged = sol.converged
    if len(depths) >= 3:
        converged = jnp.logical_and(
            converged,
            depth_relative_error(sol.loss, depth_error, sol.loss_error, problem["tol"])
            <= problem["tol"],
        )
    return dataclasses.replace(
        sol,
        converged=converged,
        depth_error=depth_error,
        time_error=time_error,
        ladder=tuple(ladder),
    )
