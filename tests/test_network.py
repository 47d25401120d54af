"""The finite network: NTK formula vs autodiff, closed-form gradients vs jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dmft
from dmft import network
from dmft.activations import get_activation
from dmft.parameterization import scales


def _setup(activation, depth, parameterization="depth-mup", alpha=0.5, width=24, eta0=0.3):
    act = get_activation(activation)
    sc = scales(
        parameterization, width=width, depth=depth, alpha=alpha, beta0=1.3, gamma0=0.7, eta0=eta0
    )
    return act, sc


@pytest.mark.parametrize(
    "activation,depth",
    [
        ("linear", 1),
        ("linear", 4),
        ("linear", 16),
        ("relu", 1),
        ("relu", 4),
        ("relu", 16),
        ("tanh", 4),
    ],
)
@pytest.mark.parametrize("steps", [0, 6])
def test_ntk_formula_equals_autodiff_ntk(data, activation, depth, steps):
    """SPEC §2's kernel formula is the learning-rate-weighted empirical NTK, to 1e-6 relative,
    at init (steps=0) and after training (steps=6)."""
    X, y = data
    kw = dict(width=24, depth=depth, activation=activation, beta0=1.3, gamma0=0.7, eta0=0.3)
    res = dmft.simulate(X, y, steps=steps, seeds=1, return_params=True, dtype="float64", **kw)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), res.params)
    act, sc = _setup(activation, depth)
    emp = network.empirical_ntk(params, jnp.asarray(X), act=act, sc=sc, eta0=0.3)
    formula = res.ntk[0, -1]
    rel = np.max(np.abs(formula - emp)) / np.max(np.abs(emp))
    assert rel < 1e-6, rel
    if steps:  # the network really moved, so the check is not only at init
        assert np.max(np.abs(res.ntk[0, -1] - res.ntk[0, 0])) > 1e-4 * np.max(np.abs(emp))


@pytest.mark.parametrize("parameterization,alpha", [("mup", 0.5), ("sp", 0.5), ("depth-mup", 1.0)])
def test_ntk_formula_other_parameterizations(data, parameterization, alpha):
    X, y = data
    act, sc = _setup("relu", 3, parameterization, alpha)
    params = network.init_params(jax.random.PRNGKey(3), width=24, depth=3, dim=5, dtype=jnp.float64)
    h, _ = network.forward(params, jnp.asarray(X), act=act, sc=sc)
    g = network.backward(params, h, act=act, sc=sc)
    phi_k, g_k, _ = network.kernels(h, g, act=act)
    formula = network.ntk_from_kernels(
        network.input_kernel(jnp.asarray(X)), phi_k, g_k, sc.ntk_block
    )
    emp = network.empirical_ntk(params, jnp.asarray(X), act=act, sc=sc, eta0=0.3)
    np.testing.assert_allclose(formula, emp, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
def test_closed_form_gradients_equal_jax_grad(data, activation):
    X, y = data
    X, y = jnp.asarray(X), jnp.asarray(y)
    act, sc = _setup(activation, 5)
    params = network.init_params(jax.random.PRNGKey(0), width=16, depth=5, dim=5, dtype=jnp.float64)
    weights = jnp.asarray([1.0, 0, 1, 1, 0, 1, 0, 1]) / 5.0  # a minibatch of 5

    def loss(p):
        f = network.forward(p, X, act=act, sc=sc)[1]
        return 0.5 * jnp.sum(weights * (y - f) ** 2)

    h, f = network.forward(params, X, act=act, sc=sc)
    g = network.backward(params, h, act=act, sc=sc)
    mine = network.gradients(params, X, h, g, weights * (y - f), act=act, sc=sc)
    ref = jax.grad(loss)(params)
    for k in ref:
        np.testing.assert_allclose(mine[k], ref[k], rtol=1e-10, atol=1e-12)
    # the fused plain-GD update equals jax.grad followed by optax.sgd with per-layer rates
    lrs = {"W0": sc.lr_input, "Ws": sc.lr_hidden, "w": sc.lr_readout}
    fused = network.sgd_update(params, X, h, g, weights * (y - f), act=act, sc=sc)
    for k in ref:
        updates, _ = optax.sgd(lrs[k]).update(ref[k], optax.sgd(lrs[k]).init(ref[k]))
        np.testing.assert_allclose(fused[k], params[k] + updates, rtol=1e-10, atol=1e-12)


def test_backward_fields_are_scaled_output_derivatives(data):
    """g^ℓ = γ₀N ∂f/∂h^ℓ (SPEC §2), checked on the last layer by autodiff."""
    X, _ = data
    X = jnp.asarray(X)
    act, sc = _setup("tanh", 2)
    params = network.init_params(jax.random.PRNGKey(5), width=16, depth=2, dim=5, dtype=jnp.float64)
    h, _ = network.forward(params, X, act=act, sc=sc)
    g = network.backward(params, h, act=act, sc=sc)
    dfdh = jax.grad(lambda hl: jnp.sum(sc.readout * (params["w"] @ act.fn(hl))))(h[-1])
    np.testing.assert_allclose(g[-1], dfdh / sc.readout, rtol=1e-12)
