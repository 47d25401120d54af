"""The finite residual network of SPEC §1 and its order parameters (SPEC §2).

This is the finite-N twin of the single-site field equations: the same quantities under the
same names. Arrays are laid out neuron-major, ``h[ℓ] : (N, P)``; layer stacks are indexed
``0 .. L`` for ``ℓ = 1 .. L+1``:

    h¹      = W⁰ xᵀ / √D
    hˡ⁺¹    = hˡ + branch · Wˡ φ(hˡ) / √N              ℓ = 1..L
    f       = readout · w · φ(h^{L+1})
    g^{L+1} = φ'(h^{L+1}) ⊙ w
    gˡ      = gˡ⁺¹ + branch · φ'(hˡ) ⊙ (Wˡᵀ gˡ⁺¹) / √N

so that ``gˡ = (∂f/∂hˡ) / readout`` (= γ₀N ∂f/∂hˡ in μP). The parameter gradients follow from
``h`` and ``g`` in closed form, which is what autodiff would compute, in one pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dmft.activations import Activation
from dmft.parameterization import Scales


def init_params(key, *, width: int, depth: int, dim: int, dtype=jnp.float32) -> dict:
    """Draw W⁰ (N, D), Wˡ (L, N, N) and w (N,) with i.i.d. N(0, 1) entries.

    Draws are made in float32 and cast, so one key gives the same network in either precision.
    """
    k0, k1, k2 = jax.random.split(key, 3)

    def draw(k, shape):
        return jax.random.normal(k, shape, jnp.float32).astype(dtype)

    return {
        "W0": draw(k0, (width, dim)),
        "Ws": draw(k1, (depth, width, width)),
        "w": draw(k2, (width,)),
    }


def forward(params: dict, X, *, act: Activation, sc: Scales):
    """Preactivations of every layer and the output.

    Args:
        params: from ``init_params``.
        X: inputs (P, D).

    Returns:
        ``(h, f)``: h (L+1, N, P) holding h¹ … h^{L+1}; f (P,).
    """
    n = params["W0"].shape[0]
    h1 = params["W0"] @ X.T / jnp.sqrt(jnp.asarray(X.shape[1], X.dtype))
    scale = sc.branch / jnp.sqrt(jnp.asarray(n, X.dtype))

    def block(h, W):
        return h + scale * (W @ act.fn(h)), h

    h_last, h_blocks = lax.scan(block, h1, params["Ws"])
    h = jnp.concatenate([h_blocks, h_last[None]], axis=0)
    f = sc.readout * (params["w"] @ act.fn(h_last))
    return h, f


def backward(params: dict, h, *, act: Activation, sc: Scales):
    """Backward fields gˡ = (∂f/∂hˡ)/readout for ℓ = 1 … L+1, shape (L+1, N, P)."""
    n = params["W0"].shape[0]
    scale = sc.branch / jnp.sqrt(jnp.asarray(n, h.dtype))
    g_last = act.deriv(h[-1]) * params["w"][:, None]

    # Point-major (P, N) inside the loop: gᵀW is an untransposed product, while Wᵀg under vmap
    # runs ~7x slower on CPU (benchmarks/README.md).
    def block(gT_next, inputs):
        W, h_l = inputs
        gT = gT_next + scale * act.deriv(h_l).T * (gT_next @ W)
        return gT, gT

    _, g_blocks = lax.scan(block, g_last.T, (params["Ws"], h[:-1]), reverse=True)
    return jnp.concatenate([jnp.swapaxes(g_blocks, 1, 2), g_last[None]], axis=0)


def gradients(params: dict, X, h, g, error, *, act: Activation, sc: Scales) -> dict:
    """Gradient of the weighted loss ``½ Σ_μ ω_μ Δ_μ²`` with ``error[μ] = ω_μ Δ_μ``.

    ``∂loss/∂θ = −Σ_μ ω_μ Δ_μ ∂f_μ/∂θ``, with ``∂f_μ/∂Wˡ = readout · branch · gˡ⁺¹_μ φ(hˡ_μ)ᵀ/√N``.
    """
    n = params["W0"].shape[0]
    dt = h.dtype
    phi = act.fn(h)
    weighted_g = g * error  # (L+1, N, P)
    grad_w = -sc.readout * (phi[-1] @ error)
    grad_ws = (-sc.readout * sc.branch / jnp.sqrt(jnp.asarray(n, dt))) * jnp.einsum(
        "lnp,lmp->lnm", weighted_g[1:], phi[:-1]
    )
    grad_w0 = (-sc.readout / jnp.sqrt(jnp.asarray(X.shape[1], dt))) * (weighted_g[0] @ X)
    return {"W0": grad_w0, "Ws": grad_ws, "w": grad_w}


def sgd_update(params: dict, X, h, g, error, *, act: Activation, sc: Scales) -> dict:
    """One plain (S)GD step ``θ − lr_θ ∂loss/∂θ``, as ``gradients`` followed by optax.sgd
    without momentum, but with each block's rank-P update added straight onto Wˡ: the (L, N, N)
    gradient is never stored, which saves two of the five passes over the weights per step."""
    n = params["W0"].shape[0]
    dt = h.dtype
    phi = act.fn(h)
    weighted_g = g * error
    c_hidden = sc.lr_hidden * sc.readout * sc.branch / jnp.sqrt(jnp.asarray(n, dt))
    c_input = sc.lr_input * sc.readout / jnp.sqrt(jnp.asarray(X.shape[1], dt))
    return {
        "W0": params["W0"] + c_input * (weighted_g[0] @ X),
        "Ws": params["Ws"] + c_hidden * jnp.einsum("lnp,lmp->lnm", weighted_g[1:], phi[:-1]),
        "w": params["w"] + (sc.lr_readout * sc.readout) * (phi[-1] @ error),
    }


def kernels(h, g, *, act: Activation):
    """Equal-time kernels (L+1, P, P): Φˡ = φ(hˡ)ᵀφ(hˡ)/N, Gˡ = gˡᵀgˡ/N, Hˡ = hˡᵀhˡ/N."""
    n = h.shape[1]
    phi = act.fn(h)
    gram = lambda a: jnp.einsum("lnp,lnq->lpq", a, a) / n  # noqa: E731
    return gram(phi), gram(g), gram(h)


def ntk_from_kernels(Kx, Phi, G, ntk_block):
    """SPEC §2: K = Kx ⊙ G¹ + ntk_block · Σ_ℓ Gˡ⁺¹ ⊙ Φˡ + Φ^{L+1}  (η₀ factored out)."""
    return Kx * G[0] + ntk_block * jnp.sum(G[1:] * Phi[:-1], axis=0) + Phi[-1]


def input_kernel(X, X2=None):
    """Kx[μ, ν] = x_μ · x_ν / D."""
    X2 = X if X2 is None else X2
    return X @ X2.T / X.shape[1]


def empirical_ntk(params: dict, X, *, act: Activation, sc: Scales, eta0=1.0):
    """Autodiff NTK ``Σ_θ (lr_θ/η₀) ∂f_μ/∂θ ∂f_ν/∂θ`` (P, P) — the reference for the formula.

    ``sc`` must have been built with the same ``eta0`` that is passed here.
    """
    jac = jax.jacrev(lambda p: forward(p, X, act=act, sc=sc)[1])(params)
    weights = {"W0": sc.lr_input, "Ws": sc.lr_hidden, "w": sc.lr_readout}
    total = 0.0
    for name, J in jac.items():
        J = J.reshape(J.shape[0], -1)
        total = total + (weights[name] / eta0) * (J @ J.T)
    return total
