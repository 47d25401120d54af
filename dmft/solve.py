"""``solve_dmft``: the N → ∞ DMFT of a depth-μP ResNet at finite depth (SPEC §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dmft import linear_closure
from dmft.errors import DivergenceError
from dmft.network import input_kernel, ntk_from_kernels
from dmft.results import Solution
from dmft.schedule import batch_schedule
from dmft.settings import check_common, check_data, check_int, resolve_dtype

DYNAMICS = ("gd",)
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
    is solved exactly by one causal time-march (:mod:`dmft.linear_closure`); no sampling.

    Args:
        X: training inputs (P, D). y: targets (P,).
        depth: L >= 1.
        activation: "linear" (nonlinear activations are not available yet).
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
        dtype: float32 or float64 (default: JAX's default float).
        memory_limit: refuse, before compiling, a solve whose estimated memory exceeds this.
        throw: raise :class:`dmft.DivergenceError` on a non-finite loss; with False the
            solution's ``status`` and ``diverged_step`` report it.
        **simulator_only: ``width``, ``seeds``, ``center``, … are accepted and ignored, so one
            dict of settings drives both ``simulate`` and ``solve_dmft``.

    Returns:
        :class:`dmft.Solution`.

    Raises:
        ValueError, TypeError: bad input, before compiling.
        NotImplementedError: a nonlinear activation or gradient flow.
        DivergenceError: when ``throw`` and the loss becomes non-finite.

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
    if not act.is_linear:
        raise NotImplementedError(
            f"activation={act.name!r}: the Monte Carlo solver for nonlinear activations is not "
            "available yet; activation='linear' is solved exactly"
        )
    dt = resolve_dtype(dtype)
    X_all = X if X_test is None else np.concatenate([X, X_test])
    y_all = y if y_test is None else np.concatenate([y, y_test])
    n_all = X_all.shape[0]
    estimate = linear_closure.memory_bytes(
        depth=depth, steps=steps, n_points=n_all, itemsize=dt.itemsize
    )
    if estimate > memory_limit:
        raise ValueError(
            f"this solve needs about {estimate / 2**30:.2f} GiB, over `memory_limit` = "
            f"{memory_limit / 2**30:.2f} GiB; reduce `steps`, `depth` or the number of points, "
            "use dtype='float32', or raise `memory_limit`"
        )

    omega = np.zeros((steps, n_all))
    mask = batch_schedule(P, batch_size, steps, batch_seed)
    omega[:, :P] = mask / mask.sum(axis=1, keepdims=True)
    Kx = input_kernel(jnp.asarray(X_all, dt))
    out = _linear(
        Kx,
        jnp.asarray(y_all, dt),
        jnp.asarray(omega, dt),
        *(jnp.asarray(v, dt) for v in (eta0, beta0, gamma0)),
        depth=depth,
        steps=steps,
        alpha=float(alpha),
        momentum=float(momentum),
        responses=bool(responses),
    )
    phi2 = _two_time(out["Phi"], steps, n_all, P)
    g2 = _two_time(out["G"], steps, n_all, P)
    diag = lambda K: jnp.einsum("ltt...->lt...", K)  # noqa: E731
    phi_k, g_k = diag(phi2), diag(g2)
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
    solution = Solution(
        loss=loss,
        predictions=f[:, :P],
        ntk=ntk,
        phi_kernel=phi_k,
        g_kernel=g_k,
        h_kernel=phi_k,  # φ is the identity
        phi_two_time=phi2,
        g_two_time=g2,
        h_two_time=phi2,
        a_response=_two_time(out["A"], steps, n_all, P),
        b_response=_two_time(out["B"], steps, n_all, P),
        test_loss=test_loss,
        test_predictions=test_pred,
        loss_error=jnp.zeros_like(loss),
        converged=jnp.asarray(True),
        iterations=jnp.asarray(1),
        residuals=jnp.zeros((1,), dt),
        diverged_step=diverged_step,
        memory_estimate=int(estimate),
        method="linear-exact",
        settings=tuple(settings.items()),
    )
    if throw and not isinstance(diverged_step, jax.core.Tracer) and int(diverged_step) >= 0:
        raise DivergenceError(solution.status, step=int(diverged_step))
    return solution
