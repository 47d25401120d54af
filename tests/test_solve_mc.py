"""solve_dmft's Monte Carlo path: closed forms, the exact linear path, errors, jit/vmap."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft
from dmft.lazy import lazy_errors, lazy_kernels

solve_module = importlib.import_module("dmft.solve")
# 16 replicas: the z-scores below divide by a standard error from replicas - 1 degrees of
# freedom, and with 4 replicas (t with 3 dof) |z| > 3.5 has a 4% chance at each step
MC = dict(samples=1024, replicas=16)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lazy_limit_within_monte_carlo_error(data, activation):
    """γ₀ = 1e-4: loss follows (I − η₀K/P)ᵗy on the closed-form NTK within 3.5 Monte Carlo
    standard errors, and the NTK at init matches it to the sampling accuracy."""
    X, y = data
    kw = dict(depth=3, activation=activation, gamma0=1e-4, eta0=0.5, steps=6)
    sol = dmft.solve_dmft(X, y, **kw, **MC)
    assert sol.method == "monte-carlo"
    K = lazy_kernels(X, depth=3, activation=activation).ntk
    ref = 0.5 * np.mean(lazy_errors(K, y, eta0=0.5, steps=6) ** 2, axis=1)
    z = (np.asarray(sol.loss) - ref)[1:] / np.asarray(sol.loss_error)[1:]
    assert np.all(np.abs(z) < 3.5), z
    assert np.all(np.asarray(sol.loss_error)[1:] > 0)
    rel = np.linalg.norm(np.asarray(sol.ntk[0]) - K) / np.linalg.norm(K)
    assert rel < 0.03, rel  # 16 × 1024 sites: a few per cent


def test_linear_monte_carlo_agrees_with_exact_path():
    """Rich regime, one point: the Monte Carlo path (responses by Stein's lemma) agrees with the
    exact linear closure within 3.5 standard errors; without responses both miss alike."""
    one = (np.ones((1, 1)), np.ones(1))
    kw = dict(depth=2, activation="linear", gamma0=1.0, eta0=0.1, steps=6)
    exact = dmft.solve_dmft(*one, **kw)
    mc = dmft.solve_dmft(*one, method="monte-carlo", throw=False, samples=8192, replicas=4, **kw)
    z = (np.asarray(mc.loss) - np.asarray(exact.loss))[1:] / np.asarray(mc.loss_error)[1:]
    assert np.all(np.abs(z) < 3.5), z
    # the comparison has power: the response terms move the loss by many standard errors
    ablated = dmft.solve_dmft(*one, responses=False, **kw)
    gap = np.abs(np.asarray(ablated.loss) - np.asarray(exact.loss))[1:]
    assert np.max(gap / np.asarray(mc.loss_error)[1:]) > 20
    np.testing.assert_allclose(mc.g_kernel[:, 0], exact.g_kernel[:, 0], rtol=0.05)
    assert mc.a_response is None and mc.h_two_time is None


def test_sgd_uses_the_simulators_batches_in_the_lazy_limit(data):
    X, y = data
    kw = dict(depth=2, activation="relu", gamma0=1e-4, eta0=0.5, steps=6, batch_size=3)
    sol = dmft.solve_dmft(X, y, batch_seed=5, **kw, **MC)
    K = lazy_kernels(X, depth=2, activation="relu").ntk
    masks = dmft.batch_schedule(8, 3, 6, 5)
    ref = 0.5 * np.mean(lazy_errors(K, y, eta0=0.5, steps=6, batch_masks=masks) ** 2, axis=1)
    z = (np.asarray(sol.loss) - ref)[1:] / np.asarray(sol.loss_error)[1:]
    assert np.all(np.abs(z) < 3.5), z


def test_new_hyperparameters_do_not_recompile_and_vmap_matches(data):
    X, y = data
    kw = dict(depth=2, activation="tanh", steps=4, samples=1024, replicas=2, throw=False)
    dmft.solve_dmft(X, y, beta0=1.0, gamma0=1.0, eta0=0.3, **kw)
    before = solve_module._monte_carlo._cache_size()
    dmft.solve_dmft(X, y, beta0=0.7, gamma0=1.7, eta0=0.2, **kw)
    assert solve_module._monte_carlo._cache_size() == before

    etas = jnp.array([0.1, 0.3])
    batched = jax.vmap(lambda e: dmft.solve_dmft(X, y, eta0=e, **kw).loss)(etas)
    for i, e in enumerate(etas):
        single = dmft.solve_dmft(X, y, eta0=float(e), **kw).loss
        np.testing.assert_allclose(batched[i], single, rtol=1e-8)


def test_same_seed_same_solution_and_test_points(data):
    X, y = data
    kw = dict(depth=2, activation="relu", gamma0=1.0, eta0=0.3, steps=4, throw=False, **MC)
    a = dmft.solve_dmft(X, y, seed=3, **kw)
    b = dmft.solve_dmft(X, y, seed=3, X_test=X[:2], y_test=y[:2], **kw)
    # extra points change the draws, not the answer
    se = np.hypot(np.asarray(a.loss_error), np.asarray(b.loss_error))[1:]
    assert np.all(np.abs(np.asarray(a.loss) - np.asarray(b.loss))[1:] < 4 * se)
    # a test point equal to a training point follows it exactly (same sources, same fields)
    np.testing.assert_allclose(b.test_predictions, b.predictions[:, :2], rtol=1e-8, atol=1e-12)
    c = dmft.solve_dmft(X, y, seed=3, **kw)
    np.testing.assert_array_equal(np.asarray(a.loss), np.asarray(c.loss))
    assert b.test_loss_error is not None and b.test_loss_error.shape == (5,)


def test_not_converged_says_what_to_change(data):
    X, y = data
    kw = dict(depth=2, activation="relu", gamma0=1.0, eta0=0.3, steps=4, samples=512, replicas=2)
    sol = dmft.solve_dmft(X, y, tol=1e-6, throw=False, **kw)
    assert not bool(sol.converged)
    assert "samples" in sol.status and "tol" in sol.status
    with pytest.raises(dmft.ConvergenceError, match="samples"):
        dmft.solve_dmft(X, y, tol=1e-6, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(samples=10), "samples"),
        (dict(replicas=1), "replicas"),
        (dict(tol=0.0), "tol"),
        (dict(method="exact"), "method"),
        (dict(method="fixed-point"), "method"),
        (dict(samples=2**22), "memory_limit"),
    ],
)
def test_bad_monte_carlo_input_raises_before_compiling(data, kw, match):
    X, y = data
    before = solve_module._monte_carlo._cache_size()
    with pytest.raises(ValueError, match=match):
        dmft.solve_dmft(X, y, depth=2, activation="relu", steps=4, **kw)
    assert solve_module._monte_carlo._cache_size() == before


def test_divergence_reported_with_step(data):
    X, y = data
    kw = dict(depth=2, activation="relu", gamma0=1.0, eta0=40.0, steps=30, samples=1024, replicas=2)
    with pytest.raises(dmft.DivergenceError) as info:
        dmft.solve_dmft(X, y, **kw)
    sol = dmft.solve_dmft(X, y, throw=False, **kw)
    assert int(sol.diverged_step) == info.value.step > 0
    assert "diverged" in sol.status and np.all(np.isfinite(sol.loss[: info.value.step]))


def test_moment_matching_gives_exact_sample_moments_per_time():
    """Each (block, time) of the sources gets sample mean zero and sample covariance the
    identity over the sites, and the lower-triangular whitening keeps the first point's
    direction (so the order of points, and causality in time, are kept)."""
    from dmft.monte_carlo import _moment_match

    z = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 512, 4), jnp.float64)
    m = np.asarray(_moment_match(z)[0])
    np.testing.assert_allclose(m.mean(axis=2), 0.0, atol=1e-12)
    cov = np.einsum("bnsp,bnsq->bnpq", m, m) / 512
    np.testing.assert_allclose(cov, np.broadcast_to(np.eye(4), cov.shape), atol=1e-12)
    first = np.asarray(z[..., 0] - z[..., 0].mean(axis=2, keepdims=True))
    np.testing.assert_allclose(m[..., 0] * np.std(first, axis=2, keepdims=True), first, atol=1e-12)


def test_moment_matching_cuts_the_monte_carlo_error(data, monkeypatch):
    """Rich ReLU: moment-matched sources give the same loss within the errors, with a replica
    spread several times smaller in variance than plain sampling."""
    import functools

    from dmft import monte_carlo

    X, y = data
    kw = dict(depth=2, activation="relu", gamma0=1.0, eta0=0.5, steps=7, samples=1024,
              replicas=24, sampling="random", throw=False, progress=False)  # fmt: skip
    jax.clear_caches()
    matched = dmft.solve_dmft(X, y, **kw)
    plain_mc = functools.partial(monte_carlo.solve_mc, moment_match=False)
    monkeypatch.setattr(monte_carlo, "solve_mc", plain_mc)
    jax.clear_caches()  # the compiled solve must not be reused across the two
    plain = dmft.solve_dmft(X, y, **kw)
    jax.clear_caches()
    e_m, e_p = np.asarray(matched.loss_error)[1:], np.asarray(plain.loss_error)[1:]
    gain = (e_p / e_m) ** 2
    print("variance gain per step", np.round(gain, 2))
    assert np.min(gain) > 2.0, gain
    z = (np.asarray(matched.loss) - np.asarray(plain.loss))[1:] / np.hypot(e_m, e_p)
    assert np.all(np.abs(z) < 3.5), z
