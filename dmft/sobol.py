"""Scrambled Sobol' normals for the Monte Carlo sources (randomized quasi-Monte Carlo).

Each Monte Carlo site is one point of a Sobol' sequence in as many dimensions as a site has
Gaussian sources: its initial u⁰ and w₀, then, time by time, the innovations ζ, ξ of every layer.
The points fill the cube far more evenly than independent draws, so the site averages of the
march err less. Each replica scrambles the sequence afresh (Matoušek's linear matrix scramble
plus a random digital shift): every site is then exactly uniform, i.e. a standard normal after
the inverse CDF, and the replicas are independent, so their spread is still an unbiased error
estimate. That is randomized QMC (Owen 1997; Matoušek 1998); the direction numbers are
scipy's (Joe & Kuo 2008).

Dimensions go in time order (u⁰ and w₀ first, then time 0, 1, …), since Sobol' points are most
even in their leading coordinates and the early sources move the solution most. Times whose
dimensions lie beyond the table's 21 201 take independent normals. The scramble of time t is drawn
from its own key, so grids of n and 2n steps share their first n + 1 times' sources, as the
pseudo-random draw with ``time_ids`` does.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.stats import qmc

MAX_DIMS = 21201  # scipy's table of direction numbers


def bits_for(samples: int) -> int:
    """Binary digits of the point index: the first ``samples`` points are the ones used."""
    return max(1, int(samples - 1).bit_length())


@functools.lru_cache(maxsize=8)
def directions(dims: int, bits: int) -> np.ndarray:
    """(dims, bits) uint32 direction numbers v_k of the unscrambled Sobol' sequence: point i is
    the XOR of the v_k over the set bits k of its Gray code i ^ (i >> 1).

    Read off scipy's generator through its public interface: in Gray-code order point 2^k is
    point 2^k − 1 with v_k flipped in, so v_k = x(2^k) XOR x(2^k − 1). One pass up to point
    2^(bits−1) + 1 (about a second for 6 537 dimensions and 2^16 points), cached.
    """
    if not 1 <= dims <= MAX_DIMS:
        raise ValueError(f"dims must be in [1, {MAX_DIMS}], got {dims}")
    engine = qmc.Sobol(dims, scramble=False, bits=32)

    def as_int(x):
        return np.round(x * 2.0**32).astype(np.uint64).astype(np.uint32)

    out = np.empty((dims, bits), np.uint32)
    with warnings.catch_warnings():  # scipy warns about sample sizes that are not 2^k
        warnings.simplefilter("ignore")
        first = as_int(engine.random(3))  # points 0, 1, 2
        out[:, 0] = first[1] ^ first[0]
        if bits > 1:
            out[:, 1] = first[2] ^ first[1]
        position = 3
        for k in range(2, bits):
            engine.fast_forward(2**k - 1 - position)
            pair = as_int(engine.random(2))  # points 2^k − 1 and 2^k
            out[:, k] = pair[1] ^ pair[0]
            position = 2**k + 1
    return out


def scramble(v, key):
    """Linear matrix scramble and digital shift of direction numbers v (..., bits) uint32, one
    dimension per leading index: each output digit is its own digit XOR a random set of the
    more significant ones (a random unit lower-triangular matrix over GF(2), most significant
    digit first), applied to every v_k of the dimension; the shift is a random 32-digit word.
    Returns the scrambled directions (..., bits) and the shifts (...)."""
    kmat, kshift = jax.random.split(key)
    lead = v.shape[:-1]
    b = np.arange(32, dtype=np.uint32)
    above = np.array([(0xFFFFFFFF << (i + 1)) & 0xFFFFFFFF for i in range(32)], np.uint32)
    rows = (jnp.uint32(1) << b) | (jax.random.bits(kmat, (*lead, 32), jnp.uint32) & above)
    # digit i of the scrambled v_k: the parity of row_i & v_k (the digits are disjoint, so
    # their sum is their OR)
    par = lax.population_count(rows[..., :, None] & v[..., None, :]) & jnp.uint32(1)
    scrambled = jnp.sum(par << b[:, None], axis=-2, dtype=jnp.uint32)
    return scrambled, jax.random.bits(kshift, lead, jnp.uint32)


def points(w, shift, index):
    """The scrambled Sobol' points ``index`` (uint32, shaped to broadcast against ``shift``,
    e.g. with the sites on an axis where ``shift`` has size 1) as 32-digit words: point i of a
    dimension is its shift XOR the scrambled directions w (..., bits) of i's Gray-code digits."""
    gray = index ^ (index >> 1)
    x = shift ^ jnp.zeros(jnp.broadcast_shapes(index.shape, shift.shape), jnp.uint32)
    for k in range(w.shape[-1]):
        x = x ^ jnp.where(((gray >> k) & 1).astype(bool), w[..., k], jnp.uint32(0))
    return x


def normals(w, shift, index, dtype):
    """Standard normals at the scrambled Sobol' points (see ``points``)."""
    x = points(w, shift, index)
    if jnp.dtype(dtype).itemsize >= 8:
        u = (x.astype(dtype) + 0.5) * 2.0**-32
    else:  # 23 digits: the midpoints of 2^-23 cells, all exact in float32 (with 24 the top
        # one, 1 − 2^-25, rounds to 1 and its normal to infinity)
        u = ((x >> 9).astype(dtype) + 0.5) * 2.0**-23
    return jax.scipy.special.ndtri(u)
