"""Monte Carlo DMFT for any activation: a causal time-march over S sampled sites.

Each site carries the single-site fields of SPEC §3 driven by its own Gaussian sources. The
system is causal in t, so one pass solves it: at step t a forward sweep over ℓ gives hˡ(t) from
the sources at t and the fields at s < t, then Δ(t), then a backward sweep gives gˡ(t). Every
average over sites closes the kernels' new row (t, s ≤ t) the moment the fields at t exist.
There is no fixed point to iterate, so nothing to damp or to converge; the only error is the
Monte Carlo error of the site averages, which the solver estimates from independent replicas.

Sources as whitened innovations. A source uˡ ~ GP(0, Φˡ) is drawn causally as
``uˡ(t) = Σ_{s<t} Cˡ(t,s) ζ(s) + Lˡ(t) ζ(t)`` with i.i.d. standard normals ζ, where the factor rows
come from a Gram–Schmidt over sites of the fields themselves: ``φ̂(s)`` are the site trajectories
φ(hˡ(s)) whitened against their own past (sample covariance exactly the identity),
``C(t,s) = E[φ(hˡ(t)) φ̂(s)ᵀ]``, and ``L(t)`` is the symmetric square root of the covariance left
over (eigenvalues below ``rtol`` of the variance dropped: the kernels are near-singular in time
when γ₀ is small). So ``Cov(uˡ) = Φˡ`` by construction, and φ(hˡ) = F φ̂ with the same factor F.
rˡ ~ GP(0, Gˡ⁺¹) is drawn the same way from gˡ⁺¹.

Responses by Gaussian integration by parts (Stein), so ReLU's kink is handled exactly: for a
field F of the sources, ``E[∂F/∂ζ] = E[F ζ]``, and since u = Fζ,

    Σ_{s≤t} Bˡ(t,s) φ(hˡ(s)) = E[gˡ⁺¹(t) ζᵀ] F⁻¹ φ(hˡ) = E[gˡ⁺¹(t) ζᵀ] φ̂ˡ
    Σ_{s<t}  Aˡ(t,s) gˡ⁺¹(s) = E[φ(hˡ(t)) ξᵀ] ĝˡ⁺¹            (ξ the innovations of rˡ)

for each site. No kernel inverse and no derivative of φ' is needed. Control variates with zero
mean cut the noise: the fields are centred, and since φ(hˡ(s)) does not depend on ξ(s) nor
gˡ⁺¹(s−1) on ζ(s), ``E[(φ(hˡ(t)) − φ(hˡ(s))) ξ(s)]`` and ``E[(gˡ⁺¹(t) − gˡ⁺¹(s−1)) ζ(s)]`` are
averaged instead.

Moment matching: each time's innovations ζ(t), ξ(t) per layer (and u⁰, w₀) are centred and
whitened over the sites before the march, so their sample moments up to the second are exact
(``_moment_match``); the averages then lose the linear and quadratic parts of their sampling
error. The variance of a rich ReLU loss falls about 6× at the first step and 1–3× at the
last (measured: docs/solver.md); early, the fields are still close to their Gaussian sources.

Sobol' sources (``sampling="sobol"``, the default): the normals behind u⁰, w₀ and every
innovation are the coordinates of one scrambled Sobol' point per site, in time order
(``dmft.sobol``), instead of independent draws. Each replica scrambles afresh, so each source is
still exactly standard normal and the replicas are independent (randomized quasi-Monte Carlo);
the moment matching above is applied on top. The points are made on the device (per number,
one XOR per binary digit of the site index and an inverse normal CDF). Measured gains and
costs: docs/solver.md.

The matrices Aˡ, Bˡ themselves are not returned: only their action on the trajectories is
identifiable from samples. The sources are nearly degenerate in time (in a one-point linear case
the innovation scale falls 1.2, 0.14, 0.007, 3e-4 over four steps), so A = E[F ξᵀ]·F_r⁻¹ amplifies
sampling noise by the inverse of those scales; the linear path returns them exactly.

Predictions: ``f(t) = (E[w₀ φ(h^{L+1}(t))] + Σ_{s<t,ν} ε_ν(t,s) Φ^{L+1}(t,s)) / γ₀`` (SPEC §3, the
first term by Stein), with ε as in ``dmft.linear_closure``.

Kernel rows and memory terms from the whitening factor: φ(hˡ) = φ̂ˡ Fᵀ with F block lower
triangular (row block t is [C(t, s<t) | Lˡ(t)]), so the kernel row is ``E[φ(hˡ(t)) φ(hˡ)ᵀ] = C Fᵀ``
and a memory term ``Σ_s ε(s) φ(hˡ(s)) Gˡ⁺¹(t,s)`` is ``φ̂ˡ (Gˡ⁺¹(t,·) diag(ε) F)ᵀ``, which joins the
response term's product with φ̂ˡ. The raw trajectories of the hidden layers are never read back,
nor stored; both differ from the sample averages only by the directions the whitening drops
(measured: 4e-16 relative in the loss, float64 ReLU).

Cost per step: 14L + 3 products of an S × Mk site array with P columns, (14L + 3)·S·P·Mk
multiply-adds (Mk ≤ M = (T+1)·P the columns of the current time segment), plus 2L products of a
P × Mk row with an Mk × Mk factor; about 9·L·S·P²·(T+1)² for a solve with the default four
segments. With P columns per element read these products are bound by memory bandwidth, not
arithmetic, at small P (``benchmarks/bench_mc_flops.py``).

Layout: every site array is stored with the sites last, a trajectory as (M, S) and a field as
(Pt, S), and an average ``E[a Bᵀ]`` is formed as the product B aᵀ, an (M, Pt) result. XLA:CPU
runs that product, which contracts the long site axis, at memory bandwidth; with the sites first
(xᵀA) it ran on one core at a third of it (float32, S = 16384, Mk = 408, P = 8: 0.84 ms against
3.55 ms). An optimization barrier keeps XLA from folding the transpose back into the product.
The whole march is 13% faster for it (P = 8, L = 8, T = 50, S = 16384).
Memory: (4L+2)·S·M numbers for the site trajectories, 2(L+1)·M² for the kernels and 2L·M² for the
factors; the peak, though, is drawing the 2L·S·M innovations (``memory_bytes``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from dmft import sobol
from dmft.linear_closure import momentum_weights
from dmft.progress import tick

# Depths up to this run the layer loop unrolled, with one array per layer: a layer's slice of a
# stacked (L, S, M) array was copied before every product on XLA:CPU, and unrolling removes those
# copies. Measured (ReLU, float32, 2 replicas, second call): P = 8, L = 8, T = 30, S = 16384
# 9.98 -> 8.09 s with compilation 9.5 -> 12.6 s; at L = 16 (T = 20, S = 8192) 5.13 -> 4.05 s but
# compilation 7 -> 22 s, so deeper solves keep the scan over layers. With the sites-last layout
# the unrolled loop is still faster: 3.38 s against 4.56 s for the scan (P = 8, L = 8, T = 30,
# S = 8192, interleaved in one process).
UNROLL_LAYERS = 8


def memory_bytes(*, depth: int, steps: int, n_points: int, samples: int, itemsize: int) -> int:
    """Bytes held by one replica of ``solve_mc``."""
    M = (steps + 1) * n_points
    L, Pt = depth, n_points
    # The peak comes while the 2L·S·M Gaussian innovations are drawn, moment-matched and split
    # into the segments' pieces: with XLA's threefry temporaries the program holds about
    # (12.75L + 0.5)·S·M numbers then. Calibrated on the peak resident set of five solves
    # (L = 4, 8, 8, 12, 24; P = 4…16, T = 20…30): 12.6–12.7 S·M per layer; a sixth (P = 8,
    # L = 16, T = 40) peaked lower, at 9.6. Before the moment matching it was (11.5L + 1).
    # With the Sobol' sources the benchmark's three sizes peak at 0.99 of it again.
    # The march holds less: (4L+2)·S·M site numbers and 2(2L+1)·M² kernel and factor numbers,
    # twice across a segment boundary, and S·M temporaries.
    draw = (51 * L + 2) * samples * M // 4
    march = 2 * (4 * L + 2) * samples * M + 4 * samples * M + 4 * (2 * L + 1) * M * M
    return itemsize * (max(draw, march) + 2 * L * Pt * M)


def _sym_sqrt(K):
    lam, V = jnp.linalg.eigh(K)
    return (V * jnp.sqrt(jnp.clip(lam, 0.0))) @ V.T


def _moment_match(*zs):
    """Normals z (B, n, S, P), sites on axis 2, made to have sample mean zero and sample
    covariance exactly the identity over the sites, in each of the B·n blocks of P.

    Moment matching: the site averages then reproduce the first two moments of the sources
    exactly, which removes the linear and quadratic parts of the sampling error (for a ReLU
    kernel E[φ(u)φ(u')] most of it). Blocks are whitened by the inverse Cholesky factor
    (lower triangular, so within a block the order of the points is kept). Several arrays go
    through one batched factorization: two factorizations running at once deadlocked XLA:CPU.
    """
    S = zs[0].shape[2]
    zs = [z - jnp.mean(z, axis=2, keepdims=True) for z in zs]
    covs = [jnp.einsum("bnsp,bnsq->bnpq", z, z) / S for z in zs]
    chol = jnp.linalg.cholesky(jnp.concatenate(covs))
    eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
    inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    out, start = [], 0
    for z in zs:
        out.append(jnp.einsum("bnsp,bnqp->bnsq", z, inv[start : start + z.shape[0]]))
        start += z.shape[0]
    return out


def _sobol_sources(key, ids, S, L, T, Pt, dt, on_sites, innovations=True):
    """Sources from one scrambled Sobol' sequence: dimensions u⁰ (Pt) and w₀ (1) first, then
    time by time ζ and ξ of every layer (2·L·Pt), as many times as the table holds (n_q).

    Returns base (S, Pt + 1) and the innovations (2, L, n_q, S, Pt), or None for them when
    ``innovations`` is False (the caller brings its own); time t's scramble comes from
    ``fold_in(key, ids[t])``, so solves sharing ids share those times' sources."""
    per_t = 2 * L * Pt
    n_q = min(T + 1, (sobol.MAX_DIMS - Pt - 1) // per_t)
    bits = sobol.bits_for(S)
    v = jnp.asarray(sobol.directions(Pt + 1 + n_q * per_t, bits))
    site = on_sites(jnp.arange(S, dtype=jnp.uint32))
    w, shift = sobol.scramble(v[: Pt + 1], jax.random.fold_in(key, 2**31))
    base = on_sites(sobol.normals(w, shift, site[:, None], dt), 0)
    if not innovations:
        return base, None
    v_t = v[Pt + 1 :].reshape(n_q, 2, L, Pt, bits)
    w, shift = jax.vmap(lambda i, vt: sobol.scramble(vt, jax.random.fold_in(key, i)))(
        ids[:n_q], v_t
    )
    w = jnp.moveaxis(w, 0, 2)[:, :, :, None]  # (2, L, n_q, 1, Pt, bits)
    shift = jnp.moveaxis(shift, 0, 2)[:, :, :, None]  # (2, L, n_q, 1, Pt)
    z = sobol.normals(w, shift, site.reshape(1, 1, 1, S, 1), dt)
    return base, on_sites(z, 3)


def _mean_outer(a, B):
    """E[a Bᵀ] over the sites of a (Pt, S) and B (M, S): (Pt, M)."""
    return lax.optimization_barrier(B @ a.T).T / a.shape[-1]


def _whiten(x, basis, rtol):
    """Gram–Schmidt of the new block x (Pt, S) against the whitened past ``basis`` (M, S).

    Returns (C, sq, xw): C = E[x basisᵀ] (Pt, M), sq the symmetric square root of the residual
    covariance, and xw the residual whitened by sq's pseudo-inverse (Pt, S).
    Done twice ("twice is enough") so the basis stays orthonormal to rounding.
    """
    S = x.shape[-1]
    C1 = _mean_outer(x, basis)
    e = x - C1 @ basis
    C2 = _mean_outer(e, basis)
    e = e - C2 @ basis
    cov = e @ e.T / S
    lam, V = jnp.linalg.eigh(cov)
    scale = jnp.maximum(jnp.mean(jnp.sum(x * x, axis=1) / S), jnp.finfo(x.dtype).tiny)
    keep = lam > rtol * scale
    root = jnp.sqrt(jnp.where(keep, lam, 1.0))
    sq = (V * jnp.where(keep, root, 0.0)) @ V.T
    isq = (V * jnp.where(keep, 1.0 / root, 0.0)) @ V.T
    return C1 + C2, sq, isq @ e


def solve_mc(
    Kx,
    y,
    omega,
    eta0,
    beta0,
    gamma0,
    key,
    *,
    act,
    depth,
    steps,
    alpha,
    momentum,
    samples,
    rtol,
    responses=True,
    segments=4,
    progress=False,
    mesh=None,
    time_ids=None,
    moment_match=True,
    sampling="sobol",
    innovations=None,
    return_factors=False,
):
    """Time-march the Monte Carlo DMFT with ``samples`` sites (see module docstring).

    Args:
        Kx: (Pt, Pt) input kernel over training and test points.
        y: (Pt,) targets.
        omega: (T, Pt) batch weights ω_ν(s) (zero for test points).
        eta0: scalar η₀ (may be traced).
        beta0: scalar β₀ (may be traced).
        gamma0: scalar γ₀ (may be traced).
        key: PRNG key for the sources.
        act: ``dmft.activations.Activation``.
        rtol: relative eigenvalue cutoff of the whitening.
        responses: keep the Aˡ, Bˡ terms (False: the ablation of SPEC §3).
        segments: the march is compiled in this many time segments, each working on arrays cut
            to the times reached so far (more segments: less work, longer compilation).
        mesh: a one-axis ``jax.sharding.Mesh`` (axis "sites") to spread the sites over its
            devices, or None. Every site array is split along its site axis; the averages over
            sites become sums across devices, which XLA inserts (GSPMD), so the code is the same
            on one device or many and the random sources are the same draws.
        time_ids: None, or (T+1,) integers naming each time: the innovations of time t are then
            drawn from ``fold_in(key, time_ids[t])``, so two solves with the same key share
            their sources at every time they name alike (common random numbers: a flow solved
            on two grids then differs by its step error, not by independent sampling noise).
        moment_match: make each time's innovations (and the initial sources u⁰, w₀) have sample
            mean zero and sample covariance the identity over the sites (``_moment_match``):
            the same estimator with a smaller Monte Carlo error. Each time's block is matched
            on its own, so solves sharing ``time_ids`` still share their sources there.
        sampling: "sobol" (scrambled Sobol' points, ``dmft.sobol``: randomized quasi-Monte
            Carlo) or "random" (independent pseudo-random normals).
        innovations: None, or the pair (ζ, ξ) of (L, T+1, S, Pt) standard normals to use as the
            innovations of the sources uˡ and rˡ instead of drawing them (u⁰ and w₀ are still
            drawn from ``key``); e.g. from ``coarse_innovations``.
        return_factors: also return the factors Fp, Fg (L, M, M) with uˡ = Fpˡ ζˡ and
            rˡ = Fgˡ ξˡ on the grid, and the innovations zu, zr used.

    Returns:
        dict with f (T+1, Pt), Phi (L+1, M, M), G (L+1, M, M), H (L+1, T+1, Pt, Pt) equal-time
        kernels of h.
    """
    L, T, S = depth, steps, samples
    Pt = Kx.shape[0]
    dt = Kx.dtype
    M = (T + 1) * Pt
    b = beta0 / L**alpha
    kappa = float(L) ** (2 * alpha - 1)
    on = 1.0 if responses else 0.0
    mw = momentum_weights(T, momentum, dt)
    omega = jnp.concatenate([omega, jnp.zeros((1, Pt), dt)])
    phi, dphi = act.fn, act.deriv
    time_of = jnp.arange(M) // Pt

    def on_sites(x, axis=-1):  # split the site axis (by default the last) over the devices
        if mesh is None:
            return x
        spec = [None] * x.ndim
        spec[axis] = "sites"
        return lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))

    # Site arrays are stored with the sites last: a field is (Pt, S), a trajectory (M, S).
    # XLA:CPU runs both kinds of products faster in this layout (see the module docstring).
    k0, kw, ku, kr = jax.random.split(key, 4)
    ids = jnp.arange(T + 1) if time_ids is None else jnp.asarray(time_ids)
    if sampling == "sobol":
        # with given innovations only u⁰ and w₀ are drawn (same points as without)
        base, z_sobol = _sobol_sources(
            kw, ids, S, L, T, Pt, dt, on_sites, innovations=innovations is None
        )
    else:
        base = jnp.concatenate(
            [jax.random.normal(k0, (S, Pt), dt), jax.random.normal(kw, (S, 1), dt)], axis=1
        )
    if moment_match:
        base = _moment_match(on_sites(base[None, None], 2))[0][0, 0]
    u0 = on_sites(_sym_sqrt(Kx) @ base[:, :Pt].T)
    w0 = on_sites(base[:, Pt])

    def pseudo_random(k, first=0):  # times first..T: (L, T+1-first, S, Pt)
        if time_ids is None and first == 0:
            return on_sites(jax.random.normal(k, (L, T + 1, S, Pt), dt), 2)
        draw = lambda i: jax.random.normal(jax.random.fold_in(k, i), (L, S, Pt), dt)  # noqa: E731
        z = jax.vmap(draw)(ids[first:])  # (T+1-first, L, S, Pt)
        return on_sites(jnp.swapaxes(z, 0, 1), 2)

    def sources():  # ζ and ξ, (L, T+1, S, Pt) each, moment-matched together
        if sampling == "sobol":
            n_q = z_sobol.shape[2]  # times with Sobol' dimensions; the rest pseudo-random
            zs = tuple(
                z if n_q == T + 1 else jnp.concatenate([z, pseudo_random(k, n_q)], axis=1)
                for z, k in zip(z_sobol, (ku, kr), strict=True)
            )
        else:
            zs = pseudo_random(ku), pseudo_random(kr)
        if moment_match:
            zs = _moment_match(*zs)
        return [on_sites(z, 2) for z in zs]

    # The march is compiled in segments, each on arrays cut to the times reached so far. The
    # innovations are split once into the columns each segment adds ("pieces"), transposed to
    # the sites-last layout as they are cut: a segment's products run piece by piece, so no
    # segment copies a wider cut of them.
    n_seg = min(segments, T + 1)
    bounds = [round((T + 1) * k / n_seg) for k in range(n_seg + 1)]
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))  # each segment's times lo..hi
    cols = [(lo * Pt, hi * Pt) for lo, hi in spans]

    unroll = L <= UNROLL_LAYERS

    def piece(z, lo, hi):  # times lo..hi of (..., T+1, S, Pt) as (..., (hi-lo)·Pt, S)
        z = jnp.swapaxes(z[..., lo:hi, :, :], -1, -2)
        return on_sites(z.reshape(*z.shape[:-3], (hi - lo) * Pt, S))

    def pieces(z):  # per layer a tuple of (w, S) pieces if unrolled, else per piece (L, w, S)
        if unroll:
            return tuple(tuple(piece(z[l], lo, hi) for lo, hi in spans) for l in range(L))
        return tuple(piece(z, lo, hi) for lo, hi in spans)

    used = sources() if innovations is None else [on_sites(z, 2) for z in innovations]
    zu, zr = (pieces(z) for z in used)

    def centred(a):
        return a - jnp.mean(a, axis=-1, keepdims=True)

    def factor_kernel_row(x, C, F, rows):
        """E[x(t) x(s)ᵀ] for all s from the whitening: the past is F x̂ and C = E[x(t) x̂ᵀ], so
        the row is C Fᵀ (F's rows at s >= t are still zero), without reading the past sites
        again; the equal-time block comes from the samples."""
        return lax.dynamic_update_slice_in_dim(C @ F.T, x @ x.T / S, rows, axis=1)

    def per_layer(A):  # stacked (L, M, S) site arrays, or a tuple of (M, S) arrays if unrolled
        return tuple(on_sites(a) for a in A) if unroll else on_sites(A)

    def widen(A, Mk, axes):
        """A's time ``axes`` (negative indices) cut or zero-padded to width Mk (the entries of
        later times are still zero), the site axis kept split over the mesh."""
        if isinstance(A, tuple):
            return tuple(widen(a, Mk, axes) for a in A)
        width = A.shape[axes[0]]
        if width >= Mk:
            return A[
                tuple(slice(0, Mk) if i - A.ndim in axes else slice(None) for i in range(A.ndim))
            ]
        return jnp.pad(
            A, [(0, Mk - width) if i - A.ndim in axes else (0, 0) for i in range(A.ndim)]
        )

    state = dict(
        phL=on_sites(jnp.zeros((M, S), dt)),  # φ(h^{L+1})
        g1=on_sites(jnp.zeros((M, S), dt)),  # g¹
        glast=on_sites(jnp.zeros((L, Pt, S), dt)),  # gˡ⁺¹ at the previous time
        phw=per_layer(jnp.zeros((L, M, S), dt)),  # φ(hˡ) whitened against Φˡ
        ggw=per_layer(jnp.zeros((L, M, S), dt)),  # gˡ⁺¹ whitened against Gˡ⁺¹
        Fp=jnp.zeros((L, M, M), dt),  # φ(hˡ) = Fpˡ phwˡ (block lower triangular)
        Fg=jnp.zeros((L, M, M), dt),  # gˡ⁺¹ = Fgˡ ggwˡ
        Phi=jnp.zeros((L + 1, M, M), dt),
        G=jnp.zeros((L + 1, M, M), dt),
        DA=jnp.zeros((L, Pt, M), dt),  # control variates E[φ(hˡ(s)) ξ(s)ᵀ] (zero mean)
        DB=jnp.zeros((L, Pt, M), dt),  # and E[gˡ⁺¹(s−1) ζ(s)ᵀ]
        H=jnp.zeros((L + 1, T + 1, Pt, Pt), dt),
        f=jnp.zeros((T + 1, Pt), dt),
    )

    def put_row(K, new_rows, rows):  # K (layers, M, M): write row block t and column block t
        K = lax.dynamic_update_slice(K, new_rows, (0, rows, 0))
        return lax.dynamic_update_slice(K, jnp.swapaxes(new_rows, 1, 2), (0, 0, rows))

    def put_time(A, new, rows):  # A (layers, M, S): write time block t
        if isinstance(A, tuple):
            return tuple(
                lax.dynamic_update_slice_in_dim(a, c, rows, axis=0)
                for a, c in zip(A, new, strict=True)
            )
        return lax.dynamic_update_slice_in_dim(A, new, rows, axis=1)

    def sweep(body, init, ls):  # lax.scan over layers, or unrolled
        if not unroll:
            return lax.scan(body, init, jnp.asarray(ls))
        outs = []
        for l in ls:
            init, out = body(init, l)
            outs.append(out)
        return init, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    def make_step(seg):
        """The step for times of segment ``seg`` (< n_t): every (·, M) array is cut to its first
        Mk = n_t·Pt times, since the later ones are still zero (saves ~40% of the work); the
        innovations are the first seg + 1 pieces."""
        n_t = bounds[seg + 1]
        Mk = n_t * Pt
        off = cols[seg][0]  # first row of the last piece
        if unroll:
            zu_k, zr_k = (tuple(z[l][: seg + 1] for l in range(L)) for z in (zu, zr))
        else:
            zu_k, zr_k = zu[: seg + 1], zr[: seg + 1]

        def comb(zs, C):  # Σ_s C(t, s) z(s) over the pieces: (Pt, S)
            terms = [C[:, a:c] @ z for z, (a, c) in zip(zs, cols, strict=False)]
            return sum(terms[:-1], terms[-1])

        def proj(x, zs):  # E[x zᵀ] over the pieces: (Pt, Mk)
            return jnp.concatenate([_mean_outer(x, z) for z in zs], axis=1)

        def time_step(t, st):
            if progress:
                tick(t)
            rows = t * Pt
            delta = y[None, :] - st["f"]
            eps = (eta0 * gamma0 * mw[t][:n_t, None] * omega[:n_t] * delta[:n_t]).reshape(Mk)
            before = (time_of[:Mk] < t).astype(dt)
            upto = (time_of[:Mk] <= t).astype(dt)
            phw, ggw, Fp, Fg = st["phw"], st["ggw"], st["Fp"], st["Fg"]

            def at(A, i):
                if isinstance(A, tuple):
                    return A[i]
                return lax.dynamic_index_in_dim(A, i, 0, keepdims=False)

            now_z = lambda zs: lax.dynamic_slice_in_dim(zs[-1], rows - off, Pt, axis=-2)  # noqa: E731

            def at_z(Z, i):  # layer i's pieces
                return Z[i] if unroll else tuple(at(z, i) for z in Z)

            def factor_row(C, sq):  # row block t of the factor F: [C(t, s < t) | sq]
                return lax.dynamic_update_slice_in_dim(C, sq, rows, axis=1)

            # forward sweep: h¹(t) … h^{L+1}(t)
            # Σ_s Kxᵀ ε(s) g¹(s) as one product with a (Pt, Mk) matrix: written as a weighted
            # sum over times, XLA:CPU streamed g¹ at under 1 GB/s (11% of the march at P = 8)
            Ke = (Kx.T[:, None, :] * eps.reshape(n_t, Pt)[None]).reshape(Pt, Mk)
            h1 = u0 + Ke @ st["g1"]

            def forward(h, l):  # layer l = 1..L: h^{l+1}(t) from h^l(t)
                p = phi(h)
                C, sq, pw = _whiten(p, at(phw, l - 1), rtol)
                phi_row = factor_kernel_row(p, C, at(Fp, l - 1), rows)
                z = at_z(zu_k, l - 1)
                u = comb(z, C) + sq @ now_z(z)
                zr_l = at_z(zr_k, l - 1)
                pc = centred(p)
                # φ(hˡ(s)) does not depend on ξ(s): subtracting its Stein average (zero in
                # expectation) leaves E[(φ(hˡ(t)) − φ(hˡ(s))) ξ(s)], far less noisy
                DA_t = lax.dynamic_update_slice_in_dim(
                    at(st["DA"], l - 1), pc @ now_z(zr_l).T / S, rows, 1
                )
                QA = (proj(pc, zr_l) - DA_t) * before
                # response Σ A gˡ⁺¹ and memory Σ ε Φˡ gˡ⁺¹ both act on the past of
                # gˡ⁺¹ = Fgˡ ggwˡ: one product with the whitened array
                coef = b * on * QA + b * b * kappa * (phi_row * eps) @ at(Fg, l - 1)
                h_next = h + b * u + coef @ at(ggw, l - 1)
                out = dict(h=h, pw=pw, phi_row=phi_row, DA=DA_t, F=factor_row(C, sq))
                return h_next, out

            hL1, fw = sweep(forward, h1, range(1, L + 1))
            pL1 = phi(hL1)
            phL = lax.dynamic_update_slice_in_dim(st["phL"], pL1, rows, axis=0)
            # kernel rows from the updated trajectories (row t already holds the new field):
            # reading the array from before the update made XLA copy it twice per step
            phi_row_L1 = _mean_outer(pL1, phL)
            hs = jnp.concatenate([fw["h"], hL1[None]])  # (L+1, Pt, S)
            phw = put_time(phw, fw["pw"], rows)
            Fp = lax.dynamic_update_slice(Fp, fw["F"], (0, rows, 0))
            Phi = put_row(st["Phi"], jnp.concatenate([fw["phi_row"], phi_row_L1[None]]), rows)
            H = st["H"].at[:, t].set(jnp.einsum("lps,lqs->lpq", hs, hs) / S)
            # E[w₀ φ(h^{L+1}(0))] = 0 exactly: subtract it as a control variate
            f_t = (jnp.mean(w0 * (pL1 - phL[:Pt]), axis=1) + phi_row_L1 @ eps) / gamma0
            f = st["f"].at[t].set(f_t)

            # backward sweep: g^{L+1}(t) … g¹(t)
            w = w0 + eps @ phL
            gL1 = dphi(hL1) * w

            def backward(g, l):  # layer l = L..1: g^l(t) from g^{l+1}(t)
                C, sq, gw = _whiten(g, at(ggw, l - 1), rtol)
                g_row = factor_kernel_row(g, C, at(Fg, l - 1), rows)
                z = at_z(zr_k, l - 1)
                r = comb(z, C) + sq @ now_z(z)
                zu_l = at_z(zu_k, l - 1)
                # likewise gˡ⁺¹(t−1) does not depend on ζ(t)
                DB_t = lax.dynamic_update_slice_in_dim(
                    at(st["DB"], l - 1),
                    centred(at(st["glast"], l - 1)) @ now_z(zu_l).T / S,
                    rows,
                    1,
                )
                QB = (proj(centred(g), zu_l) - DB_t) * upto
                # response Σ B φ(hˡ) and memory Σ ε Gˡ⁺¹ φ(hˡ): one product with phwˡ
                coef = on * QB + b * kappa * (g_row * eps) @ at(Fp, l - 1)
                g_prev = g + b * dphi(at(hs, l - 1)) * (r + coef @ at(phw, l - 1))
                out = dict(g=g, gw=gw, g_row=g_row, DB=DB_t, F=factor_row(C, sq))
                return g_prev, out

            g1, bw = sweep(backward, gL1, range(L, 0, -1))
            rev = lambda a: a[::-1]  # noqa: E731  (outputs ran l = L..1)
            g1_traj = lax.dynamic_update_slice_in_dim(st["g1"], g1, rows, axis=0)
            g_rows1 = _mean_outer(g1, g1_traj)
            G = put_row(st["G"], jnp.concatenate([g_rows1[None], rev(bw["g_row"])]), rows)

            return dict(
                phL=phL,
                g1=g1_traj,
                glast=rev(bw["g"]),
                phw=phw,
                ggw=put_time(ggw, rev(bw["gw"]), rows),
                Fp=Fp,
                Fg=lax.dynamic_update_slice(Fg, rev(bw["F"]), (0, rows, 0)),
                Phi=Phi,
                G=G,
                DA=fw["DA"],
                DB=rev(bw["DB"]),
                H=H,
                f=f,
            )

        return time_step

    # Segments of the march, each with its own (cut) array width.
    st = dict(state)
    for seg, (lo, hi) in enumerate(spans):
        # the arrays go straight from one segment's width to the next: one copy at a boundary
        Mk = hi * Pt
        for k in ("phL", "g1", "phw", "ggw"):  # (·, M, S)
            st[k] = widen(st[k], Mk, (-2,))
        for k in ("DA", "DB"):  # (L, Pt, M)
            st[k] = widen(st[k], Mk, (-1,))
        for k in ("Phi", "G", "Fp", "Fg"):  # (·, M, M)
            st[k] = widen(st[k], Mk, (-2, -1))
        st.update(phL=on_sites(st["phL"]), g1=on_sites(st["g1"]))
        st.update(phw=per_layer(st["phw"]), ggw=per_layer(st["ggw"]))
        st = lax.fori_loop(lo, hi, make_step(seg), st)
    out = {"f": st["f"], "Phi": st["Phi"], "G": st["G"], "H": st["H"]}
    if return_factors:
        out.update(Fp=st["Fp"], Fg=st["Fg"], zu=used[0], zr=used[1])
    return out


def coarse_innovations(F, z, stride):
    """Innovations that make a grid ``stride`` times coarser share one solve's source paths.

    A solve on the fine grid draws a source as u = F ζ (``solve_mc(..., return_factors=True)``
    gives F and ζ). Its values at every ``stride``-th time are then u_c = F_c ζ, with F_c those
    rows of F; a block Gram–Schmidt of F_c's rows, in time order and normalized within each
    time's block by the symmetric square root as ``solve_mc`` does, writes them as
    u_c = T Q ζ with T block lower triangular and Q with orthonormal rows. The coarse grid's
    innovations are Qζ, each standard normal like ζ, and a solve on the coarse grid driven by
    them draws its sources along the fine solve's paths, off by only as much as the two grids'
    kernels differ. Solves on several grids coupled this way differ mostly by their step
    errors, which is what lets the order of the time discretization be measured with sampled
    sites (``benchmarks/flow_depth_orders.py``). Two limits, measured (docs/flow_and_depth.md):
    for a nonlinear activation about a tenth of each grid's sampling error is not shared, at
    every dτ, which sets a floor under the differences; and the coarse innovations, mixtures of
    many of the fine grid's Sobol' coordinates, no longer have the smaller finite-sample bias of
    Sobol' points: late in a rich ReLU flow the coupled solves differ from the default solve by
    one to a few per cent at 16 384 sites, as solves with pseudo-random sources do. Call it
    outside the jitted solve it feeds: its QR and SVD compiled into one program with the march
    have hung XLA:CPU (512 steps, 16 384 sites).

    Args:
        F: (L, M, M) factors on the fine grid, M = (T+1)·Pt.
        z: (L, T+1, S, Pt) the fine grid's innovations (Pt points per time).
        stride: keep every stride-th time (T must be a multiple of it).

    Returns:
        (L, T/stride + 1, S, Pt) innovations for the coarse grid.
    """
    T1, S, Pt = z.shape[1:4]
    times = jnp.arange(0, T1, stride)
    rows = (times[:, None] * Pt + jnp.arange(Pt)[None]).reshape(-1)

    def one(F, z):
        # Fc = Dᵀ Qᵀ by QR of Fcᵀ (D upper triangular); Dᵀ's diagonal blocks are then rotated
        # to the symmetric root: a block B = W Σ Vᵀ (SVD) is sq·(W Vᵀ) with sq = W Σ Wᵀ
        Q, D = jnp.linalg.qr(F[rows].T)
        n_t = times.shape[0]
        blocks = jnp.swapaxes(
            D.reshape(n_t, Pt, n_t, Pt)[jnp.arange(n_t), :, jnp.arange(n_t)], 1, 2
        )
        W, _, Vt = jnp.linalg.svd(blocks)
        rot = W @ Vt  # (n_t, Pt, Pt)
        q = jnp.einsum("kab,kbm->kam", rot, Q.T.reshape(n_t, Pt, -1))  # (n_t, Pt, M)
        zf = jnp.swapaxes(z, 1, 2).reshape(T1 * Pt, S)  # (M, S), row t·Pt + p
        return jnp.swapaxes((q.reshape(n_t * Pt, -1) @ zf).reshape(n_t, Pt, S), 1, 2)

    return jax.vmap(one)(F, z)
