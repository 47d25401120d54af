"""Scrambled Sobol' sources (dmft.sobol) and the solver's sampling="sobol"."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import qmc

import dmft
from dmft import sobol
from dmft.lazy import lazy_errors, lazy_kernels


def test_directions_reproduce_scipys_sequence():
    """XOR of the direction numbers over the Gray-code digits gives scipy's unscrambled points,
    in scipy's order."""
    dims, bits = 37, 9
    v = sobol.directions(dims, bits)
    i = np.arange(2**bits, dtype=np.uint32)
    gray = i ^ (i >> 1)
    x = np.zeros((2**bits, dims), np.uint32)
    for k in range(bits):
        x ^= np.where(((gray >> k) & 1)[:, None] == 1, v[None, :, k], 0).astype(np.uint32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = qmc.Sobol(dims, scramble=False, bits=32).random(2**bits)
    np.testing.assert_array_equal(x, np.round(ref * 2.0**32).astype(np.uint64).astype(np.uint32))


def test_scrambled_points_keep_the_net_structure():
    """After the random linear scramble and shift, 2^m points still put exactly one point in
    each of the 2^m cells of every coordinate and of the first two coordinates jointly (a
    (0, m, 2)-net), and two keys give different points; the normals are standard."""
    dims, m = 24, 10
    v = jnp.asarray(sobol.directions(dims, m))
    index = jnp.arange(2**m, dtype=jnp.uint32)[:, None]
    xs = []
    for seed in (0, 1):
        w, shift = sobol.scramble(v, jax.random.PRNGKey(seed))
        x = np.asarray(sobol.points(w, shift, index)).astype(np.uint64)
        for j in range(dims):
            assert len(np.unique(x[:, j] >> (32 - m))) == 2**m, j
        assert len(set(zip(x[:, 0] >> 27, x[:, 1] >> 27, strict=True))) == 2**m
        xs.append(x)
    assert np.mean(xs[0] == xs[1]) < 0.01
    z = np.asarray(sobol.normals(w, shift, index, jnp.float64))
    # stratified in each coordinate: the sample mean is far inside its 1/√n random scale
    assert np.max(np.abs(z.mean(axis=0))) < 0.2 / np.sqrt(2**m)
    np.testing.assert_allclose(z.var(axis=0), 1.0, atol=0.02)


def test_bad_sampling_is_refused(data):
    X, y = data
    with pytest.raises(ValueError, match="`sampling` must be one of"):
        dmft.solve_dmft(X, y, depth=2, steps=3, sampling="halton")


def test_sobol_sources_cut_the_monte_carlo_error(data):
    """Rich ReLU: Sobol' sources give the loss of pseudo-random ones within the errors, with a
    replica spread several times smaller in variance. (Measured gains per step, seeds 0 and 1:
    geometric means 5.0 and 5.6 at 4096 sites; 2.8 and 1.9 at 1024, too close to call.)"""
    X, y = data
    kw = dict(depth=2, activation="relu", gamma0=1.0, eta0=0.5, steps=7, samples=4096,
              replicas=24, throw=False, progress=False)  # fmt: skip
    qmc_ = dmft.solve_dmft(X, y, sampling="sobol", **kw)
    plain = dmft.solve_dmft(X, y, sampling="random", **kw)
    e_q, e_p = np.asarray(qmc_.loss_error)[1:], np.asarray(plain.loss_error)[1:]
    gain = (e_p / e_q) ** 2
    print("variance gain per step", np.round(gain, 2))
    assert np.exp(np.mean(np.log(gain))) > 2.5 and np.min(gain) > 1.5, gain
    z = (np.asarray(qmc_.loss) - np.asarray(plain.loss))[1:] / np.hypot(e_q, e_p)
    assert np.all(np.abs(z) < 3.5), z


def test_times_beyond_the_table_take_pseudo_random_sources(data, monkeypatch):
    """With fewer Sobol' dimensions than sources, the later times are drawn pseudo-randomly
    and the lazy limit still holds within the Monte Carlo error."""
    X, y = data
    L, P = 2, X.shape[0]
    monkeypatch.setattr(sobol, "MAX_DIMS", P + 1 + 3 * 2 * L * P)  # 3 of 7 times
    jax.clear_caches()
    kw = dict(depth=L, activation="relu", gamma0=1e-4, eta0=0.5, steps=6)
    sol = dmft.solve_dmft(X, y, samples=1024, replicas=16, **kw)
    jax.clear_caches()
    K = lazy_kernels(X, depth=L, activation="relu").ntk
    ref = 0.5 * np.mean(lazy_errors(K, y, eta0=0.5, steps=6) ** 2, axis=1)
    z = (np.asarray(sol.loss) - ref)[1:] / np.asarray(sol.loss_error)[1:]
    assert np.all(np.abs(z) < 3.5), z


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_extreme_points_give_finite_normals(dtype):
    """The lowest and highest 32-digit words map inside (0, 1): finite, symmetric normals."""
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        pytest.skip("float64 disabled")
    words = jnp.array([0, 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=jnp.uint32)
    no_directions = jnp.zeros((5, 1), jnp.uint32)
    z = np.asarray(sobol.normals(no_directions, words, jnp.zeros((1,), jnp.uint32), dtype))
    assert np.all(np.isfinite(z)), z
    assert z[0] < -5 and z[-1] > 5 and abs(z[2]) < 1e-6
    np.testing.assert_allclose(z[0], -z[-1], rtol=1e-6)
