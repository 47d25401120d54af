"""Exact DMFT for linear networks: every single-site variable is linear in the Gaussian sources.

For φ(h) = h the single-site equations of SPEC §3 read, on vectors over (t, μ) pairs,

    h¹      = u⁰ + 𝒳 g¹                      𝒳[(t,μ),(s,ν)] = Kx_{μν} ε_ν(t,s)
    hˡ⁺¹    = hˡ + b uˡ + 𝒞ˡ gˡ⁺¹             𝒞ˡ = b Aˡ + b²κ (Φˡ ⊙ ℰ)
    g^{L+1} = w₀ 𝟙 + ℰ h^{L+1}
    gˡ      = gˡ⁺¹ + b rˡ + 𝒟ˡ hˡ             𝒟ˡ = b Bˡ + b²κ (Gˡ⁺¹ ⊙ ℰ)

with ``ℰ[(t,μ),(s,ν)] = ε_ν(t,s) = η₀γ₀ m(t−s) ω_ν(s) Δ_ν(s)`` for s < t (zero otherwise), where
ω_ν(s) is the batch weight (1/P full batch), m(k) = (1−μᵏ)/(1−μ) the heavy-ball weight, b = β₀L^{−α}
and κ = L^{2α−1}. So each variable is ``x = R z`` for a coefficient row R over the stacked
sources z = (u⁰, u¹…uᴸ, r¹…rᴸ, w₀), whose covariance Σ is block diagonal (Kx, Φ¹…Φᴸ,
G²…G^{L+1}, 1). The responses are coefficients — ``Aˡ(t,s) = ∂hˡ(t)/∂rˡ(s)``,
``Bˡ(t,s) = ∂gˡ⁺¹(t)/∂uˡ(s)`` — and the kernels are ``Φˡ = Rₕ Σ Rₕᵀ``, ``Gˡ = R_g Σ R_gᵀ``.

Everything is causal in t: at step t a forward sweep over ℓ gives the rows hˡ(t) (which need
g at s < t only), a backward sweep the rows gˡ(t) (which need h at s < t only), and each new
row closes the kernels at (t, s ≤ t). A single time-march therefore solves the system exactly;
there is no fixed point to iterate. Predictions use SPEC §3's exact discrete-time formula
``f(t) = (∂h^{L+1}(t)/∂w₀ + Σ_{s<t,ν} ε_ν(t,s) Φ^{L+1}(t,s)) / γ₀``.

Column layout of a coefficient row (M = (T+1)·P points in time):
u-blocks k = 0 … L+1 (k = 0 holds u⁰ in its first P slots, k = L+1 is unused padding so the
blocks line up with ``Phi[k]``), r-blocks j = 0 … L (j = 0 unused; block j is rʲ, whose
covariance is ``G[j]`` = Gʲ⁺¹), then w₀.

Rows at times ≥ t and columns of sources at times > t are still zero at step t, so the march
runs in time segments (``default_segments``), each on arrays cut to the times it reaches: about
half the reads of the full arrays with four segments (a third in the limit of many).

Memory: two coefficient arrays of (L+1)·M·Z numbers with Z ≈ (2L+3)·M, plus the last cut
pair while the full ones are made from it (``memory_bytes``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dmft.progress import tick


def momentum_weights(steps: int, momentum: float, dtype):
    """(T+1, T+1) matrix m[t, s] = (1 − μ^{t−s})/(1 − μ) for s < t, else 0 (μ = 0 gives 1)."""
    t = jnp.arange(steps + 1)
    lag = t[:, None] - t[None, :]
    if momentum == 0:
        w = jnp.ones(lag.shape)
    else:
        w = (1 - momentum ** jnp.maximum(lag, 0).astype(float)) / (1 - momentum)
    return jnp.where(lag > 0, w, 0.0).astype(dtype)


def default_segments(*, depth: int, steps: int, n_points: int) -> int:
    """Time segments of the march: one for small solves (each segment compiles its own loop
    body, about a second at L = 64), up to 4 when the work dwarfs compilation. The work counts
    the coefficient reads, ~L·T·M·Z, and the kernel products, which grow with the points per
    step (measured: P = 1, L = 64, T = 100 runs 8.9 s in one segment and 4.7 s in four; P = 8,
    L = 8, T = 50 11.3 s and 6.7 s)."""
    M = (steps + 1) * n_points
    work = (depth + 1) * (steps + 1) * M * ((2 * depth + 3) * M) * (1 + n_points / 2)
    return int(min(4, steps + 1, max(1, round(work / 1e9))))


def _bounds(steps: int, segments: int) -> list[int]:
    """Time points reached at the end of each segment, preceded by 0."""
    n_seg = min(segments, steps + 1)
    return [round((steps + 1) * k / n_seg) for k in range(n_seg + 1)]


def memory_bytes(*, depth: int, steps: int, n_points: int, itemsize: int, segments=None) -> int:
    """Bytes held by the coefficient and kernel arrays of ``solve_linear``, with the two cut
    coefficient arrays that are still alive while the last segment's full ones are made."""
    if segments is None:
        segments = default_segments(depth=depth, steps=steps, n_points=n_points)
    M = (steps + 1) * n_points
    Z = (2 * depth + 3) * M + 1
    full = 2 * (depth + 1) * M * Z + (2 * depth + 3) * M * M
    bounds = _bounds(steps, segments)
    m = bounds[-2] * n_points if len(bounds) > 2 else 0  # rows of the last cut array
    return itemsize * (full + 2 * (depth + 1) * m * ((2 * depth + 3) * m + 1))


def solve_linear(
    Kx,
    y,
    omega,
    eta0,
    beta0,
    gamma0,
    *,
    depth,
    steps,
    alpha,
    momentum,
    responses=True,
    progress=False,
    segments=None,
):
    """Time-march the exact linear DMFT (see module docstring).

    Args:
        Kx: (Pt, Pt) input kernel over training and test points.
        y: (Pt,) targets (test targets only enter the test loss).
        omega: (T, Pt) batch weights ω_ν(s) (zero for test points).
        eta0: scalar η₀ (may be traced).
        beta0: scalar β₀ (may be traced).
        gamma0: scalar γ₀ (may be traced).
        responses: keep the Aˡ, Bˡ terms; False drops them (the ablation of SPEC §3).
        segments: the march is compiled in this many time segments, each on arrays cut to the
            times reached so far (rows and source columns after the segment are zero, so
            the cut loses nothing); None chooses by size (``default_segments``).

    Returns:
        dict with f (T+1, Pt), Phi (L+1, M, M) for Φ¹…Φ^{L+1}, G (L+1, M, M) for G¹…G^{L+1},
        A (L, M, M), B (L, M, M).
    """
    L, T = depth, steps
    Pt = Kx.shape[0]
    dt = Kx.dtype
    nb = 2 * L + 3  # u-blocks 0..L+1, r-blocks 0..L
    b = beta0 / L**alpha
    kappa = float(L) ** (2 * alpha - 1)
    mw = momentum_weights(T, momentum, dt)
    omega = jnp.concatenate([omega, jnp.zeros((1, Pt), dt)])  # no update after the last step
    eye = jnp.eye(Pt, dtype=dt)
    b_resp = b if responses else 0.0
    if segments is None:
        segments = default_segments(depth=L, steps=T, n_points=Pt)

    def make_step(n):
        """The time step on arrays cut to the first n times: M = n·Pt points, each source
        block M columns wide, Z = nb·M + 1 columns in all (w₀ last)."""
        M = n * Pt
        r0 = (L + 2) * M  # first column of the r-blocks
        Z = nb * M + 1

        # Within one time step the big arrays are read only; the new rows at time t are
        # collected and written once at the end of each sweep (updating them in the layer loop
        # would copy them).
        def apply_kernel(c, K_old, new_rows, rows):
            """c @ K_full for each block k, where K_full[k] is K_old[k] (zero in row/column
            block t) completed by its new row block ``new_rows[k]`` (Pt, M) and, by symmetry,
            column block."""
            out = jnp.einsum("pkm,kmn->pkn", c, K_old)
            c_t = lax.dynamic_slice_in_dim(c, rows, Pt, axis=2)
            out = out + jnp.einsum("pkq,kqn->pkn", c_t, new_rows)
            diag = lax.dynamic_slice_in_dim(new_rows, rows, Pt, axis=2)
            col = jnp.einsum("pkm,kqm->pkq", c, new_rows) - jnp.einsum("pkr,kqr->pkq", c_t, diag)
            return out + lax.dynamic_update_slice_in_dim(jnp.zeros_like(out), col, rows, axis=2)

        def times_rows(v, R):
            """v @ Rᵀ for v (Pt, Z), R (M, Z), computed as (R @ vᵀ)ᵀ: XLA:CPU runs the first
            form at about a third of the read bandwidth of the second (it copies R)."""
            return (R @ v.T).T

        def cov_row(row, R_old, Phi, phi_new, G, g_new, rows):
            """Cov(x(t), x(s)) over all s for one block of rows: row Σ R_allᵀ, Σ = diag(Phi,
            G, 1)."""
            u = row[:, :r0].reshape(Pt, L + 2, M)
            r = row[:, r0:-1].reshape(Pt, L + 1, M)
            y = jnp.concatenate(
                [
                    apply_kernel(u, Phi, phi_new, rows).reshape(Pt, -1),
                    apply_kernel(r, G, g_new, rows).reshape(Pt, -1),
                    row[:, -1:],
                ],
                axis=1,
            )
            c = times_rows(y, R_old)  # R_old has zeros in rows >= t; add the new row's block
            return lax.dynamic_update_slice_in_dim(c, y @ row.T, rows, axis=1)

        def put_rows(K, new_rows, rows, offset=0):
            """Write row block t (and, by symmetry, column block t) of K[offset:offset+len]."""
            K = lax.dynamic_update_slice(K, new_rows, (offset, rows, 0))
            return lax.dynamic_update_slice(K, jnp.swapaxes(new_rows, 1, 2), (offset, 0, rows))

        def unit(col0):
            """(Pt, Z) rows with a 1 at columns col0 + μ."""
            return lax.dynamic_update_slice(jnp.zeros((Pt, Z), dt), eye, (0, col0))

        def time_step(t, state):
            if progress:
                tick(t)
            Rh, Rg, Phi, G, f = state
            rows = t * Pt
            delta = y[None, :] - f[:n]  # rows s >= t are multiplied by zero weights below
            eps = (eta0 * gamma0 * mw[t, :n][:, None] * omega[:n] * delta).reshape(M)
            g_none = jnp.zeros((L + 1, Pt, M), dt)

            # forward sweep: h¹(t) … h^{L+1}(t)
            X_t = (Kx[:, None, :] * eps.reshape(n, Pt)[None]).reshape(Pt, M)
            row = unit(0) + X_t @ Rg[0]
            phi_new = jnp.zeros((L + 2, Pt, M), dt)
            phi_new = phi_new.at[1].set(cov_row(row, Rh[0], Phi, phi_new, G, g_none, rows))

            def forward(carry, l):  # h^{l+1}(t) from h^l(t), l = 1..L
                cur, phi_new = carry
                A_t = lax.dynamic_slice_in_dim(cur, r0 + l * M, M, axis=1)
                C_t = b_resp * A_t + b**2 * kappa * phi_new[l] * eps[None, :]
                new = cur + b * unit(l * M + rows) + C_t @ Rg[l]
                c = cov_row(new, Rh[l], Phi, phi_new, G, g_none, rows)
                return (new, lax.dynamic_update_index_in_dim(phi_new, c, l + 1, 0)), new

            (_, phi_new), h_rows = lax.scan(forward, (row, phi_new), jnp.arange(1, L + 1))
            h_rows = jnp.concatenate([row[None], h_rows])  # (L+1, Pt, Z)
            Rh = lax.dynamic_update_slice(Rh, h_rows, (0, rows, 0))
            Phi = put_rows(Phi, phi_new[1:], rows, offset=1)
            f = f.at[t].set((h_rows[L, :, -1] + phi_new[L + 1] @ eps) / gamma0)

            # backward sweep: g^{L+1}(t) … g¹(t); Phi is complete up to time t now
            phi_none = jnp.zeros((L + 2, Pt, M), dt)
            row = jnp.zeros((Pt, Z), dt).at[:, -1].set(1.0) + (eps @ Rh[L])[None, :]
            g_new = jnp.zeros((L + 1, Pt, M), dt)
            g_new = g_new.at[L].set(cov_row(row, Rg[L], Phi, phi_none, G, g_new, rows))

            def backward(carry, l):  # g^l(t) from g^{l+1}(t), l = L..1
                nxt, g_new = carry
                B_t = lax.dynamic_slice_in_dim(nxt, l * M, M, axis=1)
                D_t = b_resp * B_t + b**2 * kappa * g_new[l] * eps[None, :]
                new = nxt + b * unit(r0 + l * M + rows) + D_t @ Rh[l - 1]
                c = cov_row(new, Rg[l - 1], Phi, phi_none, G, g_new, rows)
                return (new, lax.dynamic_update_index_in_dim(g_new, c, l - 1, 0)), new

            (_, g_new), g_rows = lax.scan(backward, (row, g_new), jnp.arange(L, 0, -1))
            g_rows = jnp.concatenate([g_rows[::-1], row[None]])  # g¹ … g^{L+1}
            Rg = lax.dynamic_update_slice(Rg, g_rows, (0, rows, 0))
            G = put_rows(G, g_new, rows)
            return Rh, Rg, Phi, G, f

        return time_step

    def widen(R, n_old, n_new):
        """Coefficient rows cut to n_old times -> n_new times: zero rows and, in every source
        block, zero columns for the new times (w₀ stays last)."""
        m, m2 = n_old * Pt, n_new * Pt
        body = R[..., :-1].reshape(L + 1, m, nb, m)
        body = jnp.pad(body, ((0, 0), (0, m2 - m), (0, 0), (0, m2 - m)))
        w0 = jnp.pad(R[..., -1:], ((0, 0), (0, m2 - m), (0, 0)))
        return jnp.concatenate([body.reshape(L + 1, m2, nb * m2), w0], axis=-1)

    def widen_kernel(K, n_old, n_new):
        d = (n_new - n_old) * Pt
        return jnp.pad(K, ((0, 0), (0, d), (0, d)))

    bounds = _bounds(T, segments)
    n0 = bounds[1]
    M0 = n0 * Pt
    Phi = jnp.zeros((L + 2, M0, M0), dt).at[0, :Pt, :Pt].set(Kx)
    G = jnp.zeros((L + 1, M0, M0), dt)
    Rh = jnp.zeros((L + 1, M0, nb * M0 + 1), dt)
    Rg = jnp.zeros((L + 1, M0, nb * M0 + 1), dt)
    f = jnp.zeros((T + 1, Pt), dt)
    state = (Rh, Rg, Phi, G, f)
    for lo, hi, prev in zip(bounds[:-1], bounds[1:], [n0] + bounds[1:-1], strict=True):
        Rh, Rg, Phi, G, f = state
        if hi > prev:
            Rh, Rg = widen(Rh, prev, hi), widen(Rg, prev, hi)
            Phi, G = widen_kernel(Phi, prev, hi), widen_kernel(G, prev, hi)
        state = lax.fori_loop(lo, hi, make_step(hi), (Rh, Rg, Phi, G, f))
    Rh, Rg, Phi, G, f = state
    M = (T + 1) * Pt
    r0 = (L + 2) * M
    layers = jnp.arange(1, L + 1)
    A = jax.vmap(lambda l: lax.dynamic_slice(Rh, (l - 1, 0, r0 + l * M), (1, M, M))[0])(layers)
    B = jax.vmap(lambda l: lax.dynamic_slice(Rg, (l, 0, l * M), (1, M, M))[0])(layers)
    return {"f": f, "Phi": Phi[1:], "G": G, "A": A, "B": B}
