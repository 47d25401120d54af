"""solve_dmft on linear networks: closed forms, the response ablation, networks, jit/vmap."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft
from dmft.lazy import lazy_errors, lazy_kernels, linear_one_point_ntk

solve_module = importlib.import_module("dmft.solve")
ONE = (np.ones((1, 1)), np.ones(1))


@pytest.mark.parametrize("depth", [1, 4, 16])
def test_lazy_limit_linear_one_point(depth):
    """γ₀ = 1e-4: NTK = K_L = 2aᴸ + β₀²aᴸ⁻¹ and loss = (1 − η₀K)^{2t}/2 to 1e-6 relative."""
    sol = dmft.solve_dmft(*ONE, depth=depth, activation="linear", gamma0=1e-4, eta0=0.05, steps=20)
    K = linear_one_point_ntk(depth)
    np.testing.assert_allclose(sol.ntk[:, 0, 0], K, rtol=1e-6)
    np.testing.assert_allclose(sol.loss, 0.5 * (1 - 0.05 * K) ** (2 * np.arange(21)), rtol=1e-6)


def test_lazy_limit_linear_several_points_with_sgd_and_momentum(data):
    X, y = data
    kw = dict(depth=3, activation="linear", beta0=0.8, gamma0=1e-4, eta0=0.1, steps=12)
    lazy = lazy_kernels(X, depth=3, activation="linear", beta0=0.8)
    sol = dmft.solve_dmft(X, y, **kw)
    np.testing.assert_allclose(sol.ntk[0], lazy.ntk, rtol=1e-6)
    np.testing.assert_allclose(sol.ntk[-1], lazy.ntk, rtol=1e-6)
    ref = lazy_errors(lazy.ntk, y, eta0=0.1, steps=12)
    np.testing.assert_allclose(sol.predictions, y - ref, atol=1e-6 * np.abs(y).max())
    sgd = dmft.solve_dmft(X, y, batch_size=3, batch_seed=4, **kw)
    masks = dmft.batch_schedule(8, 3, 12, 4)
    ref = lazy_errors(lazy.ntk, y, eta0=0.1, steps=12, batch_masks=masks)
    np.testing.assert_allclose(sgd.predictions, y - ref, atol=1e-6 * np.abs(y).max())


def test_kernels_at_init_are_the_lazy_recursion(data):
    X, y = data
    sol = dmft.solve_dmft(X, y, depth=5, activation="linear", beta0=1.2, gamma0=1.0, steps=3)
    lazy = lazy_kernels(X, depth=5, activation="linear", beta0=1.2)
    np.testing.assert_allclose(sol.phi_kernel[:, 0], lazy.phi_kernel, rtol=1e-10)
    np.testing.assert_allclose(sol.g_kernel[:, 0], lazy.g_kernel, rtol=1e-10)


def test_response_ablation_matches_spec_numbers():
    """SPEC §3: one point, β₀ = γ₀ = 1, η₀ = 0.02, loss at t = 10 without/with responses is
    ×3.0 at L = 4 and ×4.0 at L = 8."""
    for depth, ratio in ((4, 3.0), (8, 4.0)):
        kw = dict(depth=depth, activation="linear", gamma0=1.0, eta0=0.02, steps=10)
        full = dmft.solve_dmft(*ONE, **kw).loss[-1]
        ablated = dmft.solve_dmft(*ONE, responses=False, **kw).loss[-1]
        assert ablated / full == pytest.approx(ratio, abs=0.06)


def test_feature_learning_speeds_up_training():
    kw = dict(depth=4, activation="linear", eta0=0.02, steps=10)
    lazy = dmft.solve_dmft(*ONE, gamma0=1e-4, **kw)
    rich = dmft.solve_dmft(*ONE, gamma0=1.0, **kw)
    assert rich.loss[-1] < 0.8 * lazy.loss[-1]  # measured 0.64
    assert rich.ntk[-1, 0, 0] > 1.1 * rich.ntk[0, 0, 0]  # the kernel grows


@pytest.mark.parametrize("gamma0", [0.5, 2.0])
def test_agrees_with_networks_extrapolated_in_width(gamma0):
    """Linear, one point, L = 2: ensembles at N = 128 … 1024 extrapolated to 1/N → 0 (weighted
    least squares of the mean loss on 1/N) agree with the solver within 3 standard errors."""
    kw = dict(depth=2, activation="linear", beta0=1.0, gamma0=gamma0, eta0=0.05, steps=8)
    sol = dmft.solve_dmft(*ONE, **kw)
    widths = np.array([128, 256, 512, 1024])
    means, ses = [], []
    for n in widths:
        res = dmft.simulate(*ONE, width=int(n), seeds=96, center=True, seed=3, **kw)
        means.append(res.mean()[1:])
        ses.append(res.stderr()[1:])
    means, ses = np.array(means), np.array(ses)
    A = np.stack([np.ones(len(widths)), 1.0 / widths], axis=1)
    for t in range(means.shape[1]):
        w = 1.0 / ses[:, t]
        coef, *_ = np.linalg.lstsq(A * w[:, None], means[:, t] * w, rcond=None)
        se0 = np.sqrt(np.linalg.inv((A * w[:, None]).T @ (A * w[:, None]))[0, 0])
        assert abs(coef[0] - sol.loss[t + 1]) < 3 * se0, (t, coef[0], sol.loss[t + 1], se0)


def test_test_points_follow_without_driving_learning(data):
    X, y = data
    kw = dict(depth=2, activation="linear", gamma0=1.0, eta0=0.2, steps=6)
    base = dmft.solve_dmft(X, y, **kw)
    with_test = dmft.solve_dmft(X, y, X_test=X[:2] * 1.5, y_test=y[:2], **kw)
    np.testing.assert_allclose(with_test.loss, base.loss, rtol=1e-10)
    same = dmft.solve_dmft(X, y, X_test=X[:3], y_test=y[:3], **kw)
    np.testing.assert_allclose(same.test_predictions, base.predictions[:, :3], rtol=1e-10)
    # linear network: predictions are linear in the input, so scaling x scales f
    np.testing.assert_allclose(with_test.test_predictions, 1.5 * base.predictions[:, :2], rtol=1e-8)


def test_new_hyperparameters_do_not_recompile_and_vmap_matches():
    kw = dict(depth=3, activation="linear", steps=6)
    dmft.solve_dmft(*ONE, beta0=1.0, gamma0=1.0, eta0=0.05, **kw)
    before = solve_module._linear._cache_size()
    dmft.solve_dmft(*ONE, beta0=0.7, gamma0=1.7, eta0=0.03, **kw)
    assert solve_module._linear._cache_size() == before

    etas = jnp.array([0.01, 0.03, 0.05])
    batched = jax.vmap(lambda e: dmft.solve_dmft(*ONE, eta0=e, **kw).loss)(etas)
    for i, e in enumerate(etas):
        np.testing.assert_allclose(
            batched[i], dmft.solve_dmft(*ONE, eta0=float(e), **kw).loss, rtol=1e-12
        )


def test_divergence_reported_with_step():
    kw = dict(depth=2, activation="linear", gamma0=1.0, eta0=3.0, steps=60)
    with pytest.raises(dmft.DivergenceError, match="step") as info:
        dmft.solve_dmft(*ONE, **kw)
    sol = dmft.solve_dmft(*ONE, throw=False, **kw)
    assert int(sol.diverged_step) == info.value.step > 0
    assert "diverged" in sol.status and np.all(np.isfinite(sol.loss[: info.value.step]))


BAD = [
    (dict(depth=0), ValueError, "`depth` must be an int >= 1"),
    (dict(eta0=-1.0), ValueError, "`eta0` must be in"),
    (dict(gamma0=0.0), ValueError, "`gamma0` must be in"),
    (dict(parameterization="mup"), ValueError, "`parameterization` must be 'depth-mup'"),
    (dict(optimizer="adam"), ValueError, "`optimizer` must be 'gd' or 'sgd'"),
    (dict(dynamics="euler"), ValueError, "`dynamics` must be one of"),
    (dict(activation="softsign"), ValueError, "`activation` must be one of"),
    (dict(dynamics="flow"), ValueError, "needs `t_max` > 0"),
    (dict(memory_limit=10), ValueError, "`memory_limit`"),
    (dict(nonsense=1), TypeError, "unexpected keyword"),
]


@pytest.mark.parametrize("override,err,msg", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_raises_before_compiling(monkeypatch, override, err, msg):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(solve_module, "_linear", no_compile)
    monkeypatch.setattr(solve_module, "_monte_carlo", no_compile)
    kw = dict(depth=2, activation="linear", steps=3)
    kw.update(override)
    with pytest.raises(err, match=msg):
        dmft.solve_dmft(*ONE, **kw)


def test_simulator_settings_dict_drives_the_solver():
    settings = dict(
        width=256,
        seeds=4,
        depth=2,
        activation="linear",
        gamma0=1.0,
        eta0=0.05,
        steps=4,
        center=True,
    )
    sol = dmft.solve_dmft(*ONE, **settings)
    sim = dmft.simulate(*ONE, **settings)
    assert sol.loss.shape == sim.loss.shape[1:] and sol.ntk.shape == sim.ntk.shape[1:]
    assert sol.phi_kernel.shape == sim.phi_kernel.shape[1:]


def test_time_segments_cut_nothing(data):
    """The march on arrays cut to the times reached (several segments) returns what one segment
    does, to rounding: with momentum, minibatches and a test point, every output array."""
    from dmft.linear_closure import memory_bytes, momentum_weights, solve_linear

    X, y = data
    Kx = jnp.asarray(X @ X.T / X.shape[1])
    T, Pt = 9, 8
    omega = jnp.asarray(dmft.batch_schedule(7, 3, T, 2), float) / 3
    omega = jnp.concatenate([omega, jnp.zeros((T, 1))], axis=1)  # the last point is a test point
    kw = dict(depth=3, steps=T, alpha=0.5, momentum=0.5)
    one = solve_linear(Kx, jnp.asarray(y), omega, 0.3, 1.1, 1.5, segments=1, **kw)
    for segments in (3, T + 1):
        cut = solve_linear(Kx, jnp.asarray(y), omega, 0.3, 1.1, 1.5, segments=segments, **kw)
        for k in one:
            np.testing.assert_allclose(cut[k], one[k], rtol=1e-10, atol=1e-13, err_msg=k)
    assert np.abs(one["A"]).max() > 1e-3 and np.abs(one["f"][1:]).max() > 1e-2
    assert momentum_weights(T, 0.5, float).shape == (T + 1, T + 1)
    # the estimate counts the last cut pair alongside the full arrays
    size = dict(depth=3, steps=T, n_points=Pt, itemsize=8)
    assert memory_bytes(segments=3, **size) > memory_bytes(segments=1, **size)
