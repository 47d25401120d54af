"""``solve_dmft``: the N → ∞ DMFT of a depth-μP ResNet at finite depth (SPEC §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dmft import linear_closure, monte_carlo
from dmft.errors import ConvergenceError, DivergenceError
from dmft.network import input_kernel, ntk_from_kernels
from dmft.results import Solution
from dmft.schedule import batch_schedule
from dmft.settings import check_common, check_data, check_int, check_scalar, resolve_dtype

DYNAMICS = ("gd",)
METHODS = ("auto", "exact", "monte-carlo")
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
    "progress",
)

_linear = jax.jit(
    linear_closure.solve_linear,
    static_argnames=("depth", "steps", "alpha", "momentum", "responses"),
)


def _mc_replicas(Kx, y, omega, eta0, beta0, gamma0, key, *, n_train, replicas, **kw):
    """Run ``replicas`` independent Monte Carlo solves one after another (memory of one) and
    return the mean kernels and predictions with the per-replica training and test losses."""
    dt = Kx.dtype

    def one(key):
        return monte_carlo.solve_mc(Kx, y, omega, eta0, beta0, gamma0, key, **kw)

    shapes = jax.eval_shape(one, key)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    T1 = shapes["f"].shape[0]

    def body(i, carry):
        acc, losses = carry
        out = one(jax.random.fold_in(key, i))
        err = (y[None, :] - out["f"]) ** 2
        loss_i = jnp.stack(
            [0.5 * jnp.mean(err[:, :n_train], axis=1), 0.5 * jnp.mean(err[:, n_train:], axis=1)]
        )
        acc = jax.tree.map(lambda a, b: a + b / replicas, acc, out)
        return acc, losses.at[i].set(loss_i)

    losses = jnp.zeros((replicas, 2, T1), dt)
    return lax.fori_loop(0, replicas, body, (zeros, losses))


_monte_carlo = jax.jit(
    _mc_replicas,
    static_argnames=(
        "n_train",
        "replicas",
        "act",
        "depth",
        "steps",
        "alpha",
        "momentum",
        "samples",
        "rtol",
        "responses",
    ),
)


def _two_time(K, steps, n_all, n_train):
    """(layers, M, M) over (t, μ) pairs → (layers, T+1, T+1, P, P) over training points."""
    K = K.reshape(K.shape[0], steps + 1, n_all, steps + 1, n_all).transpose(0, 1, 3, 2, 4)
    return K[..., :n_train, :n_train]


def _setting(x):
    if isinstance(x, jax.core.Tracer):
        return "traced"
    try:
        return float(x)
    except TypeError:
        return repr(x)


def solve_dmft(
    X,
    y,
    *,
    depth: int,
    activation="relu",
    beta0=1.0,
    gamma0=1.0,
    eta0=0.05,
    steps: int,
    alpha: float = 0.5,
    dynamics: str = "gd",
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
    seed: int = 0,
    tol: float = 0.05,
    dtype=None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    throw: bool = True,
    **simulator_only,
) -> Solution:
    """Solve the infinite-width DMFT of SPEC §3 for discrete-time (S)GD at depth L.

    The single-site system (b = β₀/L^α, κ = L^{2α−1}, ε_ν(t,s) = η₀γ₀ m(t−s) ω_ν(s) Δ_ν(s))::

        h¹(t)   = u⁰ + Σ_{s<t} Kx ε(t,s) g¹(s)
        hˡ⁺¹(t) = hˡ(t) + b[uˡ(t) + Σ_s Aˡ(t,s) gˡ⁺¹(s)] + b²κ Σ_s Φˡ(t,s) ε(t,s) gˡ⁺¹(s)
        gˡ(t)   = gˡ⁺¹(t) + b φ'(hˡ(t))[rˡ(t) + Σ_s Bˡ(t,s) φ(hˡ(s)) + bκ Σ_s Gˡ⁺¹(t,s) ε(t,s) φ(hˡ(s))]

    closed by Φˡ = E[φ(hˡ)φ(hˡ)ᵀ], Gˡ = E[gˡgˡᵀ] and the responses Aˡ, Bˡ, with predictions by
    the exact discrete-time formula ``f(t) = E[∂φ(h^{L+1}(t))/∂w₀]/γ₀ + Σ_{s<t} ε(t,s)Φ^{L+1}(t,s)/γ₀``.
    For ``activation="linear"`` every variable is linear in the Gaussian sources and the system
    is solved exactly by one causal time-march (:mod:`dmft.linear_closure`); no sampling. Any
    other activation is solved by the same causal march over ``samples`` Monte Carlo sites
    (:mod:`dmft.monte_carlo`), with the responses by Gaussian integration by parts (exact for
    ReLU's kink) and ``replicas`` independent replicas giving the Monte Carlo error. Nothing is
    iterated, so there is no damping or iteration limit to tune: accuracy is set by ``samples``.

    Args:
        X: training inputs (P, D). y: targets (P,).
        depth: L >= 1.
        activation: "linear", "relu", "tanh" or an elementwise JAX callable.
        beta0, gamma0, eta0: β₀ >= 0, γ₀ > 0, η₀ >= 0; Python or JAX scalars, so ``jax.vmap``
            sweeps them and new values do not recompile.
        steps: number of updates T.
        alpha: branch exponent in [1/2, 1].
        dynamics: "gd" (discrete-time gradient descent, with ``batch_size`` for SGD).
        parameterization, optimizer: must be "depth-mup" and "gd"/"sgd" (the DMFT's setting).
        batch_size, batch_seed: minibatches from :func:`dmft.batch_schedule`, the same ones
            ``simulate`` uses for the same ``batch_seed``.
        momentum: heavy-ball coefficient μ in [0, 1).
        X_test, y_test: optional test set; its fields follow the same equations without
            driving learning.
        responses: keep the response terms Aˡ, Bˡ (False: the ablation of SPEC §3).
        method: "auto" (exact for linear, Monte Carlo otherwise), "exact" (linear only) or
            "monte-carlo" (any activation; for linear networks, to check the sampler).
        samples: Monte Carlo sites per replica, at least 2·(steps+1)·(training + test points);
            default max(8192, 4·(steps+1)·points). The error falls as samples^−1/2.
        replicas: independent Monte Carlo replicas (>= 2); their spread gives ``loss_error``
            and the reported fields are their mean. They run one after another, so memory is
            that of one replica.
        seed: seed of the Monte Carlo sources.
        tol: largest accepted relative Monte Carlo standard error of the loss; above it the
            solution has ``converged=False`` (and ``throw`` raises :class:`dmft.ConvergenceError`).
        dtype: float32 or float64 (default: JAX's default float).
        memory_limit: refuse, before compiling, a solve whose estimated memory exceeds this.
        throw: raise :class:`dmft.DivergenceError` on a non-finite loss and
            :class:`dmft.ConvergenceError` above ``tol``; with False the solution's ``status``,
            ``converged`` and ``diverged_step`` report them.
        **simulator_only: ``width``, ``seeds``, ``center``, … are accepted and ignored, so one
            dict of settings drives both ``simulate`` and ``solve_dmft``.

    Returns:
        :class:`dmft.Solution`.

    Raises:
        ValueError, TypeError: bad input, before compiling.
        NotImplementedError: gradient flow (``dynamics="flow"``).
        DivergenceError: when ``throw`` and the loss becomes non-finite.
        ConvergenceError: when ``throw`` and the Monte Carlo error exceeds ``tol``.

    Example:
        >>> import numpy as np, dmft
        >>> sol = dmft.solve_dmft(np.ones((1, 1)), np.ones(1), depth=4, activation="linear",
        ...                       gamma0=1e-4, eta0=0.05, steps=3)
        >>> round(float(sol.ntk[0, 0, 0]), 4)
        6.8359
    """
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
        if dynamics == "flow":
            raise NotImplementedError("dynamics='flow' (gradient flow) is not available yet")
        raise ValueError(f"`dynamics` must be one of {DYNAMICS}, got {dynamics!r}")
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
    M = (steps + 1) * n_all
    if not exact:
        if samples is None:
            samples = max(8192, 4 * M)
        check_int("samples", samples, minimum=2 * M)
        check_int("replicas", replicas, minimum=2)
        check_int("seed", seed, minimum=0)
    check_scalar("tol", tol, low=0.0, low_open=True)
    dt = resolve_dtype(dtype)
    X_all = X if X_test is None else np.concatenate([X, X_test])
    y_all = y if y_test is None else np.concatenate([y, y_test])
    if exact:
        estimate = linear_closure.memory_bytes(
            depth=depth, steps=steps, n_points=n_all, itemsize=dt.itemsize
        )
    else:
        estimate = monte_carlo.memory_bytes(
            depth=depth, steps=steps, n_points=n_all, samples=samples, itemsize=dt.itemsize
        )
    if estimate > memory_limit:
        fewer = "" if exact else "fewer `samples`, "
        raise ValueError(
            f"this solve needs about {estimate / 2**30:.2f} GiB, over `memory_limit` = "
            f"{memory_limit / 2**30:.2f} GiB; reduce {fewer}`steps`, `depth` or the number of "
            "points, use dtype='float32', or raise `memory_limit`"
        )

    omega = np.zeros((steps, n_all))
    mask = batch_schedule(P, batch_size, steps, batch_seed)
    omega[:, :P] = mask / mask.sum(axis=1, keepdims=True)
    Kx = input_kernel(jnp.asarray(X_all, dt))
    scalars = tuple(jnp.asarray(v, dt) for v in (eta0, beta0, gamma0))
    common_static = dict(depth=depth, steps=steps, alpha=float(alpha), momentum=float(momentum))
    if exact:
        out = _linear(
            Kx,
            jnp.asarray(y_all, dt),
            jnp.asarray(omega, dt),
            *scalars,
            responses=bool(responses),
            **common_static,
        )
        h2 = _two_time(out["Phi"], steps, n_all, P)
        a_resp = _two_time(out["A"], steps, n_all, P)
        b_resp = _two_time(out["B"], steps, n_all, P)
        loss_error = None
    else:
        out, replica_losses = _monte_carlo(
            Kx,
            jnp.asarray(y_all, dt),
            jnp.asarray(omega, dt),
            *scalars,
            jax.random.PRNGKey(seed),
            n_train=P,
            replicas=replicas,
            act=act,
            samples=samples,
            rtol=float(np.sqrt(np.finfo(dt).eps)) ** 1.5,
            responses=bool(responses),
            **common_static,
        )
        h2 = a_resp = b_resp = None
        sem = jnp.std(replica_losses, axis=0, ddof=1) / np.sqrt(replicas)
        loss_error, test_loss_error = sem[0], sem[1]
    phi2 = _two_time(out["Phi"], steps, n_all, P)
    g2 = _two_time(out["G"], steps, n_all, P)
    diag = lambda K: jnp.einsum("ltt...->lt...", K)  # noqa: E731
    phi_k, g_k = diag(phi2), diag(g2)
    h_k = phi_k if exact else out["H"][:, :, :P, :P]
    ntk_block = jnp.asarray(beta0, dt) ** 2 / depth
    ntk = jax.vmap(ntk_from_kernels, in_axes=(None, 1, 1, None))(Kx[:P, :P], phi_k, g_k, ntk_block)
    f = out["f"]
    loss = 0.5 * jnp.mean((jnp.asarray(y, dt) - f[:, :P]) ** 2, axis=-1)
    test_loss = test_pred = None
    if X_test is not None:
        test_pred = f[:, P:]
        test_loss = 0.5 * jnp.mean((jnp.asarray(y_test, dt) - test_pred) ** 2, axis=-1)
    finite = jnp.isfinite(loss)
    diverged_step = jnp.where(jnp.all(finite), -1, jnp.argmin(finite)).astype(jnp.int32)
    if exact:
        loss_error = jnp.zeros_like(loss)
        worst = jnp.zeros((), dt)
    else:
        # relative Monte Carlo error of the loss, where the loss is still above rounding
        floor = 1e3 * jnp.finfo(dt).eps * loss[0]
        worst = jnp.max(jnp.where(loss > floor, loss_error / jnp.maximum(loss, floor), 0.0))
    converged = jnp.logical_and(worst <= tol, jnp.all(finite))

    settings = dict(
        depth=depth,
        activation=act.name,
        beta0=_setting(beta0),
        gamma0=_setting(gamma0),
        eta0=_setting(eta0),
        steps=steps,
        alpha=float(alpha),
        dynamics=dynamics,
        batch_size=batch_size,
        batch_seed=batch_seed,
        momentum=float(momentum),
        responses=bool(responses),
        dtype=dt.name,
    )
    if not exact:
        settings.update(samples=samples, replicas=replicas, seed=seed, tol=float(tol))
    solution = Solution(
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
        converged=converged,
        iterations=jnp.asarray(1),
        residuals=worst[None],
        diverged_step=diverged_step,
        test_loss_error=None if (exact or X_test is None) else test_loss_error,
        memory_estimate=int(estimate),
        method="linear-exact" if exact else "monte-carlo",
        settings=tuple(settings.items()),
    )
    if throw and not isinstance(diverged_step, jax.core.Tracer):
        if int(diverged_step) >= 0:
            raise DivergenceError(solution.status, step=int(diverged_step))
        if not bool(converged):
            raise ConvergenceError(solution.status, iterations=1, residual=float(worst))
    return solution
