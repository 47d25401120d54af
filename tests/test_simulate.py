"""The simulator: optimizers, reproducibility, dtypes, chunking, input errors, divergence."""

import importlib

import numpy as np
import pytest

import dmft

sim_module = importlib.import_module("dmft.simulate")


def _linearised_predictions(K, y, *, eta0, steps, momentum=0.0, masks=None):
    """f(t) = η₀ K Σ_{s<t} (1−μ^{t−s})/(1−μ) (m_s ⊙ Δ(s)) / |B_s| on a frozen NTK (SPEC §3)."""
    P = len(y)
    masks = np.ones((steps, P)) if masks is None else masks
    f = np.zeros((steps + 1, P))
    grads = []
    for t in range(1, steps + 1):
        s = t - 1
        grads.append(masks[s] * (y - f[s]) / masks[s].sum())
        w = [(1 - momentum ** (t - r)) / (1 - momentum) if momentum else 1.0 for r in range(t)]
        f[t] = eta0 * K @ np.sum([wr * gr for wr, gr in zip(w, grads, strict=True)], axis=0)
    return f


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(momentum=0.6),
        dict(batch_size=3, batch_seed=7),
        dict(momentum=0.5, batch_size=4),
    ],
    ids=["gd", "momentum", "sgd", "sgd+momentum"],
)
def test_lazy_network_follows_linearised_dynamics(data, kw):
    """At γ₀ → 0 a centred network trains on its frozen NTK: checks the learning-rate rule, the
    momentum weights (1−μ^{t−s})/(1−μ) and the batch schedule against SPEC §3's formulas."""
    X, y = data
    steps, eta0 = 12, 0.4
    res = dmft.simulate(
        X,
        y,
        width=128,
        depth=3,
        activation="tanh",
        gamma0=1e-4,
        eta0=eta0,
        steps=steps,
        center=True,
        **kw,
    )
    masks = dmft.batch_schedule(len(y), kw.get("batch_size"), steps, kw.get("batch_seed", 0))
    ref = _linearised_predictions(
        res.ntk[0, 0], y, eta0=eta0, steps=steps, momentum=kw.get("momentum", 0.0), masks=masks
    )
    np.testing.assert_allclose(res.predictions[0], ref, atol=2e-3 * np.abs(ref).max())
    assert np.abs(ref[-1]).max() > 0.2  # the dynamics are not trivial


def test_loss_index_zero_is_initial_loss(data):
    X, y = data
    res = dmft.simulate(X, y, width=64, depth=2, steps=3, seeds=2, center=True)
    np.testing.assert_allclose(res.loss[:, 0], 0.5 * np.mean(y**2))
    np.testing.assert_allclose(res.predictions[:, 0], 0.0, atol=1e-12)
    assert np.all(res.loss[:, -1] < res.loss[:, 0])


def test_same_seed_same_ensemble_any_chunking(data):
    X, y = data
    kw = dict(width=32, depth=3, steps=4, seeds=5, seed=11)
    a = dmft.simulate(X, y, **kw)
    b = dmft.simulate(X, y, chunk_size=2, **kw)
    c = dmft.simulate(X, y, **{**kw, "seed": 12})
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.ntk, b.ntk)
    assert not np.allclose(a.loss, c.loss)
    assert len(np.unique(a.loss[:, 0])) == 5  # members differ from each other


def test_float32_and_float64_agree(data):
    X, y = data
    kw = dict(width=64, depth=4, steps=10, seeds=2, activation="relu", eta0=0.5)
    r32 = dmft.simulate(X, y, dtype="float32", **kw)
    r64 = dmft.simulate(X, y, dtype="float64", **kw)
    assert r32.loss.dtype == np.float32 and r64.loss.dtype == np.float64
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=1e-4)


def test_fields_shapes_and_two_time_diagonal(data):
    X, y = data
    res = dmft.simulate(
        X,
        y,
        width=32,
        depth=3,
        steps=5,
        seeds=2,
        two_time_layers=(1, 4),
        X_test=X[:3],
        y_test=y[:3],
    )
    assert res.loss.shape == (2, 6) and res.predictions.shape == (2, 6, 8)
    assert res.ntk.shape == (2, 6, 8, 8) and res.phi_kernel.shape == (2, 4, 6, 8, 8)
    assert res.phi_two_time.shape == (2, 2, 6, 6, 8, 8)
    assert res.test_loss.shape == (2, 6) and res.test_predictions.shape == (2, 6, 3)
    # two-time kernels at s = t are the equal-time ones
    diag = np.einsum("sktt...->skt...", res.phi_two_time)
    np.testing.assert_allclose(diag, res.phi_kernel[:, [0, 3]], rtol=1e-12)
    diag_g = np.einsum("sktt...->skt...", res.g_two_time)
    np.testing.assert_allclose(diag_g, res.g_kernel[:, [0, 3]], rtol=1e-12)
    # test points equal to training points get the same predictions
    np.testing.assert_allclose(res.test_predictions, res.predictions[:, :, :3], rtol=1e-12)


@pytest.mark.parametrize("parameterization", ["depth-mup", "mup", "sp"])
@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_every_parameterization_and_optimizer_trains(data, parameterization, optimizer):
    X, y = data
    eta0 = {"gd": 0.05, "adam": 0.02}[optimizer]
    res = dmft.simulate(
        X,
        y,
        width=64,
        depth=4,
        steps=20,
        eta0=eta0,
        optimizer=optimizer,
        parameterization=parameterization,
        beta0=0.5,
        center=True,
    )
    assert res.status == "ok"
    assert res.loss[0, -1] < 0.9 * res.loss[0, 0]


def test_callable_activation_matches_named(data):
    import jax.numpy as jnp

    X, y = data
    kw = dict(width=32, depth=2, steps=3)
    a = dmft.simulate(X, y, activation="tanh", **kw)
    b = dmft.simulate(X, y, activation=lambda x: jnp.tanh(x), **kw)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)


def test_divergence_reported_with_step(data):
    X, y = data
    kw = dict(width=32, depth=2, steps=40, eta0=50.0, activation="linear")
    with pytest.raises(dmft.DivergenceError, match="step") as info:
        dmft.simulate(X, y, **kw)
    res = dmft.simulate(X, y, throw=False, **kw)
    step = int(res.diverged_step[0])
    assert 0 < step <= 40 and info.value.step == step
    assert np.all(np.isfinite(res.loss[0, :step])) and not np.isfinite(res.loss[0, step])
    assert "eta0" in res.status


BAD = [
    (dict(y=np.ones(3)), ValueError, "`y` must have shape"),
    (dict(width=0), ValueError, "`width` must be an int >= 1"),
    (dict(depth=0), ValueError, "`depth` must be an int >= 1"),
    (dict(depth=2.5), TypeError, "`depth`"),
    (dict(activation="gelu"), ValueError, "`activation` must be one of"),
    (dict(parameterization="ntk"), ValueError, "`parameterization` must be one of"),
    (dict(optimizer="rmsprop"), ValueError, "`optimizer` must be one of"),
    (dict(eta0=-0.1), ValueError, "`eta0` must be in"),
    (dict(gamma0=0.0), ValueError, "`gamma0` must be in"),
    (dict(alpha=0.3), ValueError, "`alpha` must be in"),
    (dict(momentum=1.0), ValueError, "`momentum` must be in"),
    (dict(batch_size=9), ValueError, r"`batch_size` must be in \[1, 8\]"),
    (dict(X=np.full((8, 5), np.nan)), ValueError, "`X` contains NaN or inf"),
    (dict(y=np.r_[np.inf, np.zeros(7)]), ValueError, "`y` contains NaN or inf"),
    (dict(X_test=np.ones((2, 4)), y_test=np.ones(2)), ValueError, "`X_test` must have 5 columns"),
    (dict(two_time_layers=(5,)), ValueError, "`two_time_layers`"),
    (dict(dtype="float16"), ValueError, "`dtype`"),
]


@pytest.mark.parametrize("override,err,msg", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_raises_before_compiling(data, monkeypatch, override, err, msg):
    X, y = data
    kw = dict(X=X, y=y, width=16, depth=3, steps=2)
    kw.update(override)

    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(sim_module, "_run_chunk", no_compile)
    with pytest.raises(err, match=msg):
        dmft.simulate(kw.pop("X"), kw.pop("y"), **kw)


def test_memory_estimate_sets_chunks(data, monkeypatch):
    X, y = data
    calls = []
    real = sim_module._run_chunk

    def counting(keys, *a):
        calls.append(keys.shape[0])
        return real(keys, *a)

    monkeypatch.setattr(sim_module, "_run_chunk", counting)
    per_seed = dmft.estimate_memory(width=64, depth=4, n_points=8, dim=5, steps=3, dtype="float64")
    dmft.simulate(X, y, width=64, depth=4, steps=3, seeds=10, memory_budget=3 * per_seed)
    assert calls == [3, 3, 3, 3]  # 10 seeds in balanced chunks of at most 3
