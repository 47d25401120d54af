"""Closed forms of SPEC §6, and the finite networks' initial kernels against them."""

import jax.numpy as jnp
import numpy as np
import pytest

import dmft
from dmft.lazy import (
    gaussian_expectations,
    lazy_errors,
    lazy_kernels,
    linear_one_point_ntk,
    relu_expectations,
)


def test_linear_one_point_values():
    one = np.ones((1, 1))
    assert lazy_kernels(one, depth=4, activation="linear").ntk[0, 0] == pytest.approx(6.8359375)
    assert linear_one_point_ntk(1) == pytest.approx(5.0)
    assert linear_one_point_ntk(10) == pytest.approx(7.545, abs=5e-4)
    assert linear_one_point_ntk(np.inf) == pytest.approx(3 * np.e)
    for L in (1, 3, 16):
        assert lazy_kernels(one, depth=L, activation="linear", beta0=0.7).ntk[
            0, 0
        ] == pytest.approx(linear_one_point_ntk(L, 0.7), rel=1e-13)


def test_linear_one_point_depth_correction():
    """K_L − K_∞ = −β₀⁴(β₀²+4)e^{β₀²}/(2L) + O(1/L²)."""
    b = 0.8
    lead = -(b**4) * (b**2 + 4) * np.exp(b**2) / 2
    for L in (200, 400):
        err = linear_one_point_ntk(L, b) - linear_one_point_ntk(np.inf, b)
        assert err * L == pytest.approx(lead, rel=3.0 / L * 10)


def test_quadrature_matches_sine_closed_form():
    """E[sin a sin b] = e^{-(Haa+Hbb)/2} sinh Hab and E[cos a cos b] = e^{-(Haa+Hbb)/2} cosh Hab."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 6))
    H = A @ A.T / 6
    d = np.diag(H)
    damp = np.exp(-(d[:, None] + d[None, :]) / 2)
    phi, dphi = gaussian_expectations(jnp.sin, H)
    np.testing.assert_allclose(phi, damp * np.sinh(H), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dphi, damp * np.cosh(H), rtol=1e-10)


def test_relu_arccos_special_angles():
    H = np.array(
        [[2.0, 2.0, -2.0, 0.0], [2.0, 2.0, -2.0, 0.0], [-2.0, -2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]]
    )
    phi, dphi = relu_expectations(H)
    assert phi[0, 1] == pytest.approx(1.0)  # identical inputs: E[relu(a)^2] = H/2
    assert phi[0, 2] == pytest.approx(0.0, abs=1e-15)  # opposite inputs never both fire
    assert phi[0, 3] == pytest.approx(np.sqrt(6) / (2 * np.pi))  # orthogonal: √(HaaHbb)/2π
    assert dphi[0, 1] == pytest.approx(0.5) and dphi[0, 3] == pytest.approx(0.25)


def test_lazy_errors_full_batch_is_matrix_power():
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    y = np.array([1.0, -1.0])
    d = lazy_errors(K, y, eta0=0.3, steps=7)
    np.testing.assert_allclose(d[7], np.linalg.matrix_power(np.eye(2) - 0.3 * K / 2, 7) @ y)


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("depth", [1, 4, 16])
def test_initial_ntk_ensemble_matches_closed_form(activation, depth):
    """Ensemble mean of the finite-N NTK at init is within 3 standard errors of SPEC §6 in every
    entry; the same ensemble rejects the closed form at a 10% wrong β₀ (the test can fail)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, 5))
    y = rng.normal(size=4)
    res = dmft.simulate(
        X, y, width=256, depth=depth, activation=activation, steps=0, seeds=64, beta0=1.0
    )
    mean, se = res.mean("ntk")[0], res.stderr("ntk")[0]
    z = (mean - lazy_kernels(X, depth=depth, activation=activation, beta0=1.0).ntk) / se
    assert np.abs(z).max() < 3.0, z
    wrong = (mean - lazy_kernels(X, depth=depth, activation=activation, beta0=1.1).ntk) / se
    assert np.abs(wrong).max() > 3.0


def test_callable_named_like_a_builtin_is_not_taken_for_it():
    def linear(x):  # named "linear", but it is sin
        return jnp.sin(x)

    act = dmft.get_activation(linear)
    assert act.name == "custom linear" and not act.is_linear
    X = np.array([[1.0, 0.5], [-0.3, 1.2]])
    disguised = dmft.lazy_kernels(X, depth=2, activation=linear).ntk
    np.testing.assert_allclose(disguised, dmft.lazy_kernels(X, depth=2, activation=jnp.sin).ntk)
    assert not np.allclose(disguised, dmft.lazy_kernels(X, depth=2, activation="linear").ntk)
