"""Closed forms of the lazy (γ₀ → 0) limit and of the kernels at initialisation (SPEC §6).

Computed in NumPy float64, independently of the JAX code they are used to check::

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
from dmft.parameterization import scales


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

    Exact for linear and ReLU; 64×64-node Gauss–Hermite quadrature for any other activation.
    """
    act = get_activation(activation)
    H = np.asarray(H, dtype=np.float64)
    if act.name == "linear":
        return H.copy(), np.ones_like(H)
    if act.name == "relu":
        return relu_expectations(H)
    return _quadrature_expectations(act, H)


@dataclasses.dataclass(frozen=True)
class LazyKernels:
    """Kernels at initialisation of the infinite-width network (frozen in the lazy limit).

    Attributes:
        h_kernel, phi_kernel, g_kernel: (L+1, P, P) for ℓ = 1 … L+1.
        ntk: (P, P), η₀ factored out.
    """

    h_kernel: np.ndarray
    phi_kernel: np.ndarray
    g_kernel: np.ndarray
    ntk: np.ndarray


def lazy_kernels(
    X, *, depth: int, activation="relu", beta0=1.0, alpha=0.5, parameterization="depth-mup"
) -> LazyKernels:
    """Infinite-width kernels at initialisation by the recursion of SPEC §6.

    Example:
        >>> import numpy as np
        >>> float(lazy_kernels(np.ones((1, 1)), depth=4, activation="linear").ntk[0, 0])
        6.8359375
    """
    X = np.asarray(X, dtype=np.float64)
    sc = scales(
        parameterization,
        width=1,
        depth=depth,
        alpha=alpha,
        beta0=float(beta0),
        gamma0=1.0,
        eta0=1.0,
    )
    b2 = float(sc.branch) ** 2
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

    With full batch this is ``(I − η₀K/P)ᵗ y``. Returns (steps+1, P).
    """
    K = np.asarray(ntk, dtype=np.float64)
    delta = np.asarray(y, dtype=np.float64).copy()
    P = delta.shape[0]
    out = [delta]
    for t in range(steps):
        m = np.ones(P) if batch_masks is None else np.asarray(batch_masks[t])
        delta = delta - eta0 * K @ (m * delta) / m.sum()
        out.append(delta)
    return np.stack(out)


def linear_one_point_ntk(depth, beta0=1.0):
    """K_L = 2aᴸ + β₀²aᴸ⁻¹ with a = 1 + β₀²/L (linear, one point, Kx = 1); L = inf gives
    (2 + β₀²)e^{β₀²}."""
    b2 = float(beta0) ** 2
    if depth == np.inf:
        return (2 + b2) * np.exp(b2)
    a = 1 + b2 / depth
    return 2 * a**depth + b2 * a ** (depth - 1)
