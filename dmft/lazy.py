"""Closed forms of the lazy (γ₀ → 0) limit and of the kernels at initialisation (SPEC §6).

Computed in NumPy float64, independently of the JAX code they are used to check:

    H¹ = Kx,   Hˡ⁺¹ = Hˡ + branch² Φ(Hˡ),   Φˡ = Φ(Hˡ)
    G^{L+1} = Φ'(H^{L+1}),   Gˡ = Gˡ⁺¹ ⊙ (1 + branch² Φ'(Hˡ))
    K = Kx ⊙ G¹ + ntk_block Σ_ℓ Gˡ⁺¹ ⊙ Φˡ + Φ^{L+1}

with ``Φ(H) = E[φ(a)φ(b)]`` and ``Φ'(H) = E[φ'(a)φ'(b)]`` for ``(a, b) ~ N(0, H)``, and
``branch² = β₀²/L^{2α}``, ``ntk_block = β₀²/L`` in depth-μP. Gradient descent on frozen kernels
gives ``Δ(t) = (I − η₀K/P)ᵗ y`` exactly.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from dmft.activations import get_activation
from dmft.io import Saveable
from dmft.parameterization import PARAMETERIZATIONS, scales
from dmft.settings import check_inputs, check_int, check_scalar


def relu_expectations(H):
    """Arc-cosine kernels of ReLU: (Φ(H), Φ'(H)) for a covariance matrix H (P, P)."""
    H = np.asarray(H, dtype=np.float64)
    d = np.sqrt(np.clip(np.diag(H), 0.0, None))
    norm = np.outer(d, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norm > 0, H / norm, 1.0)
    theta = np.arccos(np.clip(cos, -1.0, 1.0))
    phi = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    dphi = (np.pi - theta) / (2 * np.pi)
    return phi, dphi


def _quadrature_expectations(act, H, nodes: int = 64):
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    z1, z2, ww = z1.ravel(), z2.ravel(), np.outer(w, w).ravel()
    H = np.asarray(H, dtype=np.float64)
    d = np.sqrt(np.clip(np.diag(H), 0.0, None))
    norm = np.outer(d, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(np.where(norm > 0, H / norm, 1.0), -1.0, 1.0)
    a = d[:, None, None] * z1  # (P, 1, n²)
    b = d[None, :, None] * (rho[..., None] * z1 + np.sqrt(1 - rho[..., None] ** 2) * z2)
    a = np.broadcast_to(a, b.shape)
    fa, fb = (np.asarray(act.fn(jnp.asarray(v))) for v in (a, b))
    da, db = (np.asarray(act.deriv(jnp.asarray(v))) for v in (a, b))
    return (fa * fb) @ ww, (da * db) @ ww


def gaussian_expectations(activation, H):
    """(Φ(H), Φ'(H)) = (E[φ(a)φ(b)], E[φ'(a)φ'(b)]) over (a, b) ~ N(0, H), per pair of points.

    For every pair (μ, ν), (a, b) is a centred Gaussian pair with covariance
    ``[[H_μμ, H_μν], [H_μν, H_νν]]`` (SPEC §6). Exact for linear (Φ = H, Φ' = 1) and ReLU (the
    arc-cosine kernels: with ``cos θ = H_μν/√(H_μμH_νν)``,
    ``Φ = √(H_μμH_νν)(sin θ + (π−θ) cos θ)/(2π)`` and ``Φ' = (π−θ)/(2π)``); for any other
    activation a 64×64-node Gauss–Hermite product rule.
    φ is evaluated in JAX's default float: for φ = sin and kernels of order one the result is
    within 1e-15 of the closed form with 64-bit JAX, and within about 1e-7 in float32.

    Args:
        activation: a name or an elementwise callable, as for ``dmft.get_activation``.
        H: (P, P) covariance matrix (symmetric, non-negative diagonal).

    Returns:
        ``(Φ, Φ')``: two (P, P) float64 NumPy arrays.

    Raises:
        ValueError: for an unknown activation name.

    Examples:
        >>> import numpy as np
        >>> import jax.numpy as jnp
        >>> import dmft
        >>> phi, dphi = dmft.gaussian_expectations("relu", np.eye(2))
        >>> phi.shape, float(phi[0, 0]), float(dphi[0, 1])  # E[relu(a)²] = H/2; Φ'(⊥) = 1/4
        ((2, 2), 0.5, 0.25)
        >>> bool(np.isclose(phi[0, 1], 1 / (2 * np.pi)))  # orthogonal points: √(H_μμH_νν)/(2π)
        True

        Quadrature, against ``E[sin a sin b] = e^{−(H_μμ+H_νν)/2} sinh H_μν``:

        >>> H = np.array([[1.0, 0.5], [0.5, 2.0]])
        >>> phi, dphi = dmft.gaussian_expectations(jnp.sin, H)
        >>> damp = np.exp(-(np.diag(H)[:, None] + np.diag(H)[None, :]) / 2)
        >>> bool(np.allclose(phi, damp * np.sinh(H), atol=1e-6))
        True
        >>> bool(np.allclose(dphi, damp * np.cosh(H), atol=1e-6))  # E[cos a cos b]
        True
    """
    act = get_activation(activation)
    H = np.asarray(H, dtype=np.float64)
    if act.name == "linear":
        return H.copy(), np.ones_like(H)
    if act.name == "relu":
        return relu_expectations(H)
    return _quadrature_expectations(act, H)


@dataclasses.dataclass(frozen=True)
class LazyKernels(Saveable):
    """Kernels at initialisation of the infinite-width network (frozen in the lazy limit).

    Returned by ``lazy_kernels``; the recursion is in this module's docstring (SPEC §6).

    Attributes:
        h_kernel: (L+1, P, P) Hˡ for ℓ = 1 … L+1 (index ℓ − 1).
        phi_kernel: (L+1, P, P) Φˡ = Φ(Hˡ) for ℓ = 1 … L+1 (index ℓ − 1).
        g_kernel: (L+1, P, P) Gˡ for ℓ = 1 … L+1 (index ℓ − 1).
        ntk: (P, P) the NTK of SPEC §2, η₀ factored out.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> k = dmft.lazy_kernels(np.eye(3, 4) * 2.0, depth=2)
        >>> k.h_kernel.shape, k.g_kernel.shape, k.ntk.shape
        ((3, 3, 3), (3, 3, 3), (3, 3))
    """

    h_kernel: np.ndarray
    phi_kernel: np.ndarray
    g_kernel: np.ndarray
    ntk: np.ndarray


def lazy_kernels(
    X, *, depth: int, activation="relu", beta0=1.0, alpha=0.5, parameterization="depth-mup"
) -> LazyKernels:
    """Infinite-width kernels at initialisation by the recursion of SPEC §6.

    With ``Kx = XXᵀ/D`` and ``branch² = β₀²/L^{2α}``:

        H¹ = Kx,   Hˡ⁺¹ = Hˡ + branch² Φ(Hˡ),   Φˡ = Φ(Hˡ)
        G^{L+1} = Φ'(H^{L+1}),   Gˡ = Gˡ⁺¹ ⊙ (1 + branch² Φ'(Hˡ))
        K = Kx ⊙ G¹ + (β₀²/L) Σ_ℓ Gˡ⁺¹ ⊙ Φˡ + Φ^{L+1}

    (Φ, Φ' from ``gaussian_expectations``). In "mup" and "sp" the branch is β₀ and the NTK's
    block weight β₀² (``dmft.parameterization``). These are also the kernels of the lazy limit
    γ₀ → 0 at every step; ``lazy_errors`` gives the errors they imply.

    Args:
        X: inputs (P, D).
        depth: L, the number of residual blocks.
        activation: a name or an elementwise callable, as for ``dmft.get_activation``.
        beta0: β₀.
        alpha: the branch exponent α.
        parameterization: "depth-mup", "mup" or "sp".

    Returns:
        ``LazyKernels`` with (L+1, P, P) layer kernels and the (P, P) NTK, in float64.

    Raises:
        ValueError: for an unknown activation or parameterization, an argument out of range
            (``depth`` >= 1, ``beta0`` >= 0, ``alpha`` in [0.5, 1]), an ``X`` that is not a
            finite (P, D) array, or kernels too large for float64.
        TypeError: ``depth`` is not an int, or ``X``/``beta0`` do not hold real numbers.

    Examples:
        Linear network, one point with Kx = 1: ``K_L = 2aᴸ + β₀²aᴸ⁻¹`` with ``a = 1 + β₀²/L``
        (SPEC §6), 6.8359375 at L = 4, β₀ = 1:

        >>> import numpy as np
        >>> import dmft
        >>> float(dmft.lazy_kernels(np.ones((1, 1)), depth=4, activation="linear").ntk[0, 0])
        6.8359375

        ReLU, orthonormal points (Kx = I): on the diagonal ``Hˡ = rˡ⁻¹`` with
        ``r = 1 + β₀²/(2L)``, so ``K_μμ = rᴸ + β₀² rᴸ⁻¹/4``:

        >>> k = dmft.lazy_kernels(np.eye(3, 4) * 2.0, depth=2, activation="relu")
        >>> r = 1 + 1.0**2 / (2 * 2)
        >>> k.ntk.shape, bool(abs(k.ntk[0, 0] - (r**2 + r / 4)) < 1e-8)
        ((3, 3), True)
    """
    X = check_inputs(X).astype(np.float64)
    depth = check_int("depth", depth, minimum=1)
    act = get_activation(activation)
    check_scalar("beta0", beta0, low=0.0)
    check_scalar("alpha", alpha, low=0.5, high=1.0)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        # NumPy floats: a β₀ whose square overflows gives inf here, not Python's OverflowError
        kernels = _lazy_kernels(X, depth, act, np.float64(beta0), float(alpha), parameterization)
    if not all(np.all(np.isfinite(k)) for k in dataclasses.astuple(kernels)):
        raise ValueError(
            f"the lazy kernels overflow float64: `X` (largest |entry| {np.abs(X).max():.3g}) or "
            f"`beta0` (= {float(beta0):.3g}) is too large for depth {depth}, or the "
            f"`activation` {act.name!r} overflows; rescale them"
        )
    return kernels


def _lazy_kernels(X, depth, activation, beta0, alpha, parameterization):
    sc = scales(
        parameterization,
        width=1,
        depth=depth,
        alpha=alpha,
        beta0=beta0,
        gamma0=1.0,
        eta0=1.0,
    )
    b2 = np.float64(sc.branch) ** 2
    Kx = X @ X.T / X.shape[1]
    Hs, Phis, dPhis = [Kx], [], []
    for _ in range(depth):
        phi, dphi = gaussian_expectations(activation, Hs[-1])
        Phis.append(phi)
        dPhis.append(dphi)
        Hs.append(Hs[-1] + b2 * phi)
    phi_last, dphi_last = gaussian_expectations(activation, Hs[-1])
    Phis.append(phi_last)
    Gs = [dphi_last]
    for dphi in reversed(dPhis):
        Gs.append(Gs[-1] * (1.0 + b2 * dphi))
    Gs = Gs[::-1]
    H, Phi, G = np.stack(Hs), np.stack(Phis), np.stack(Gs)
    ntk = Kx * G[0] + float(sc.ntk_block) * np.sum(G[1:] * Phi[:-1], axis=0) + Phi[-1]
    return LazyKernels(h_kernel=H, phi_kernel=Phi, g_kernel=G, ntk=ntk)


def lazy_errors(ntk, y, *, eta0, steps: int, batch_masks=None):
    """Errors Δ(t), t = 0..steps, of GD on a frozen NTK: Δ(t+1) = Δ(t) − η₀ K (m_t ⊙ Δ(t)) / |B_t|.

    With full batch this is ``(I − η₀K/P)ᵗ y`` (SPEC §6), the exact lazy-limit (γ₀ → 0) training
    errors ``Δ = y − f`` with f(0) = 0; the loss is ``Σ_μ Δ_μ(t)²/(2P)``.

    Args:
        ntk: (P, P) the NTK K, η₀ factored out (e.g. ``lazy_kernels(...).ntk``).
        y: (P,) targets, which are the errors at t = 0.
        eta0: η₀.
        steps: number of updates T.
        batch_masks: optional (steps, P) 0/1 minibatch masks m_t, e.g. from
            ``dmft.batch_schedule``; |B_t| = Σ_μ m_t[μ]. None: full batch.

    Returns:
        (steps+1, P) float64 array of Δ(t). It overflows to ±inf only if gradient descent on
        K diverges (η₀λ_max(K)/|B| > 2) for long enough.

    Raises:
        ValueError: ``ntk`` is not a finite (P, P) matrix, ``y`` not finite of shape (P,),
            ``eta0`` not a finite number >= 0, ``steps`` < 0, or ``batch_masks`` not a
            (steps, P) array of 0/1 with at least one 1 per step.
        TypeError: ``steps`` is not an int, or an array does not hold real numbers.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> delta = dmft.lazy_errors(np.array([[2.0]]), np.array([1.0]), eta0=0.25, steps=3)
        >>> delta.ravel().tolist()  # (1 − 0.25·2/1)ᵗ
        [1.0, 0.5, 0.25, 0.125]
        >>> masks = dmft.batch_schedule(3, 1, 4, seed=0)
        >>> dmft.lazy_errors(np.eye(3), np.ones(3), eta0=0.5, steps=4, batch_masks=masks).shape
        (5, 3)
    """
    K = _real_array("ntk", ntk)
    y = _real_array("y", y)
    P = y.shape[0] if y.ndim == 1 else 0
    if P < 1:
        raise ValueError(f"`y` must have shape (P,) with P >= 1, got {y.shape}")
    if K.shape != (P, P):
        raise ValueError(f"`ntk` must have shape ({P}, {P}) to match `y`, got {K.shape}")
    check_scalar("eta0", eta0, low=0.0)
    steps = check_int("steps", steps, minimum=0)
    if batch_masks is None:
        masks = np.ones((steps, P))
    else:
        masks = _real_array("batch_masks", batch_masks)
        if masks.shape != (steps, P):
            raise ValueError(
                f"`batch_masks` must have shape ({steps}, {P}) (steps, points), got {masks.shape}"
            )
        if np.any((masks != 0) & (masks != 1)) or np.any(masks.sum(axis=1) == 0):
            raise ValueError(
                "`batch_masks` must hold 0/1 entries with at least one 1 per step "
                "(see dmft.batch_schedule)"
            )
    delta = y.copy()
    out = [delta]
    with np.errstate(over="ignore", invalid="ignore"):
        for m in masks:
            delta = delta - eta0 * K @ (m * delta) / m.sum()
            out.append(delta)
    return np.stack(out)


def _real_array(name, value):
    """``value`` as a float64 array of finite real numbers."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or arr.dtype == bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or inf; every entry must be finite")
    return arr.astype(np.float64)


def linear_one_point_ntk(depth, beta0=1.0):
    """K_L = 2aᴸ + β₀²aᴸ⁻¹ with a = 1 + β₀²/L (linear, one point, Kx = 1); L = inf gives
    (2 + β₀²)e^{β₀²}."""
    b2 = float(beta0) ** 2
    if depth == np.inf:
        return (2 + b2) * np.exp(b2)
    a = 1 + b2 / depth
    return 2 * a**depth + b2 * a ** (depth - 1)
