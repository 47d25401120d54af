"""Gradient flow, the infinite-depth limit and the branch exponent α (SPEC §4, §5)."""

import importlib
import math

import numpy as np
import pytest

import dmft
from dmft.lazy import linear_one_point_ntk
from dmft.solve import _ladder_weights

solve_module = importlib.import_module("dmft.solve")
ONE = (np.ones((1, 1)), np.ones(1))
FLOW = dict(depth=3, activation="linear", gamma0=1.0, dynamics="flow", t_max=0.25)


@pytest.mark.parametrize("order", [1, 2])
def test_lazy_flow_is_exponential_decay_at_design_order(order):
    """γ₀ → 0: frozen K, so the loss is e^{−2Kτ}/2 exactly; the solver's error against that
    closed form falls as dτ^order (measured max errors, order 2: 3.2e-4, 7.7e-5, 1.9e-5; the
    coarser grid of 16 steps is still pre-asymptotic, slope 2.17)."""
    K = linear_one_point_ntk(4)
    errs = []
    for n in (32, 64, 128):
        sol = dmft.solve_dmft(
            *ONE,
            depth=4,
            activation="linear",
            gamma0=1e-4,
            dynamics="flow",
            t_max=0.5,
            steps=n,
            flow_order=order,
        )
        np.testing.assert_allclose(sol.times, np.linspace(0, 0.5, n + 1), rtol=1e-12)
        errs.append(np.max(np.abs(np.asarray(sol.loss) - 0.5 * np.exp(-2 * K * sol.times))))
    slopes = -np.diff(np.log2(errs))
    assert np.all(np.abs(slopes - order) < 0.15), slopes
    if order == 2:
        assert errs[-1] < 1e-4


@pytest.mark.parametrize("order", [1, 2])
def test_flow_converges_at_its_design_order(order):
    """Rich linear flow: the error against a fine-grid solve falls as dτ^order."""
    ref = dmft.solve_dmft(*ONE, steps=128, **FLOW).loss
    errs = []
    for n in (8, 16, 32):
        loss = dmft.solve_dmft(*ONE, steps=n, flow_order=order, **FLOW).loss
        errs.append(np.max(np.abs(np.asarray(loss) - np.asarray(ref)[:: 128 // n])))
    slopes = -np.diff(np.log2(errs))
    assert np.all(np.abs(slopes - order) < 0.25), slopes


@pytest.mark.parametrize("sampling", ["sobol", "random"])
def test_monte_carlo_flow_grids_share_their_sources(sampling):
    """A Monte Carlo flow draws each time's innovation by its step index, so two grids with the
    same seed share their first innovations: at τ = 0 the fields, hence every kernel, are the
    same draws (equal to rounding), while another seed or a discrete-time solve of the same
    size draws others. This is what lets the flow's order be measured through sampling noise."""
    X, y = np.random.default_rng(0).normal(size=(2, 3)), np.array([1.0, -1.0])
    kw = dict(depth=2, activation="relu", dynamics="flow", t_max=1.0, flow_order=1)
    kw.update(samples=512, replicas=2, sampling=sampling, throw=False)
    a = dmft.solve_dmft(X, y, steps=4, **kw)
    b = dmft.solve_dmft(X, y, steps=8, **kw)
    other = dmft.solve_dmft(X, y, steps=4, seed=1, **kw)
    at0 = lambda s: np.asarray(s.h_kernel)[:, 0]  # noqa: E731
    np.testing.assert_allclose(at0(a), at0(b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(a.g_kernel)[:, 0], np.asarray(b.g_kernel)[:, 0],
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    assert np.max(np.abs(at0(a) - at0(other))) > 1e-3
    # later times differ: the grids' steps are not the same
    assert np.max(np.abs(np.asarray(a.loss)[1:] - np.asarray(b.loss)[2::2])) > 1e-6


@pytest.mark.parametrize("n_points", [1, 3])
def test_coarse_innovations_put_a_coarse_grid_on_the_fine_grids_paths(n_points):
    """Innovations derived from a fine solve's factor: with stride 1 they give back the solve
    itself; with stride 2 the coarse grid's sources follow the fine paths per site to within
    the step error (about 1% RMS at dτ = 1/4), four to five times closer than grids sharing
    innovations by step index, which draw partly different paths."""
    import jax
    import jax.numpy as jnp

    from dmft.activations import get_activation
    from dmft.monte_carlo import coarse_innovations, solve_mc

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_points, 4))
    Kx, y = jnp.asarray(X @ X.T / 4), jnp.asarray(rng.normal(size=n_points))
    kw = dict(act=get_activation("relu"), depth=2, alpha=0.5, momentum=0.0, samples=2048,
              rtol=1e-12, return_factors=True)  # fmt: skip
    key = jax.random.PRNGKey(1)

    def solve(steps, **extra):
        omega = jnp.ones((steps, n_points)) / n_points
        return solve_mc(Kx, y, omega, 2.0 / steps, 1.0, 1.0, key, steps=steps, **kw, **extra)

    def derived(out, stride):
        return [coarse_innovations(out[F], out[z], stride)
                for F, z in (("Fp", "zu"), ("Fg", "zr"))]  # fmt: skip

    def sources(out):  # uˡ = Fpˡ ζˡ per site, (L, M, S)
        z = jnp.swapaxes(out["zu"], 2, 3)
        return jnp.einsum("lab,lbs->las", out["Fp"], z.reshape(z.shape[0], -1, z.shape[-1]))

    fine = solve(16)
    again = solve(16, innovations=derived(fine, 1))
    np.testing.assert_allclose(again["f"], fine["f"], rtol=0, atol=1e-12)

    u_fine = sources(fine).reshape(2, 17, n_points, -1)[:, ::2]
    mismatch = {}
    for name, out in (("derived", solve(8, innovations=derived(fine, 2))),
                      ("by index", solve(8, time_ids=jnp.arange(9)))):  # fmt: skip
        u = sources(out).reshape(u_fine.shape)
        mismatch[name] = float(jnp.sqrt(jnp.mean((u - u_fine) ** 2) / jnp.mean(u_fine**2)))
    assert mismatch["derived"] < 0.025
    assert mismatch["by index"] > 3 * mismatch["derived"]


def test_gradient_descent_tends_to_flow_at_first_order():
    flow = dmft.solve_dmft(*ONE, steps=64, **FLOW)
    errs = []
    for n in (8, 16, 32):
        gd = dmft.solve_dmft(*ONE, depth=3, activation="linear", gamma0=1.0, eta0=0.25 / n, steps=n)
        np.testing.assert_allclose(gd.times, np.linspace(0, 0.25, n + 1), rtol=1e-12)
        errs.append(abs(float(gd.loss[-1]) - float(flow.loss[-1])))
    slopes = -np.diff(np.log2(errs))
    assert np.all(np.abs(slopes - 1) < 0.15), slopes


def test_network_flow_is_second_order_and_matches_small_step_gd():
    kw = dict(width=32, seeds=2, seed=5, **{k: v for k, v in FLOW.items()}, steps=4)
    ref = dmft.simulate(*ONE, substeps=32, **kw).loss
    errs = [np.max(np.abs(dmft.simulate(*ONE, substeps=s, **kw).loss - ref)) for s in (1, 2, 4)]
    slopes = -np.diff(np.log2(errs))
    assert np.all(np.abs(slopes - 2) < 0.3), slopes
    gd_errs = []
    for n in (32, 64, 128):  # small-step GD on the same networks approaches the flow at O(η₀)
        gd = dmft.simulate(
            *ONE,
            width=32,
            seeds=2,
            seed=5,
            depth=3,
            activation="linear",
            gamma0=1.0,
            eta0=0.25 / n,
            steps=n,
        ).loss[:, :: n // 4]
        gd_errs.append(np.max(np.abs(gd - ref)))
    slopes = -np.diff(np.log2(gd_errs))
    assert np.all(np.abs(slopes - 1) < 0.15), slopes


def test_one_settings_dict_drives_flow_in_both():
    kw = dict(FLOW, steps=4, width=16, seeds=2, substeps=2)
    res = dmft.simulate(*ONE, **kw)
    sol = dmft.solve_dmft(*ONE, **kw)
    assert res.loss.shape == (2, 5) and sol.loss.shape == (5,)
    assert res.config["dynamics"] == sol.config["dynamics"] == "flow"


def test_ladder_weights_are_richardson():
    w = _ladder_weights((8, 16, 32))
    np.testing.assert_allclose(w, [1 / 3, -2, 8 / 3])
    # exact on polynomials of degree 2 in 1/L
    q = lambda L: 3.0 + 2.0 / L - 5.0 / L**2  # noqa: E731
    assert sum(wi * q(L) for wi, L in zip(w, (8, 16, 32), strict=False)) == pytest.approx(
        3.0, rel=1e-13
    )


def test_infinite_depth_lazy_linear_closed_form():
    """K_∞ = (2 + β₀²)e^{β₀²} to 1e-4 relative with the default ladder."""
    sol = dmft.solve_dmft(*ONE, depth=math.inf, activation="linear", gamma0=1e-4, steps=1)
    K = float(sol.ntk[0, 0, 0])
    assert K == pytest.approx(linear_one_point_ntk(math.inf), rel=1e-4)  # measured 4.6e-5
    assert [s.config["depth"] for s in sol.ladder] == list(sol.config["depths"])
    # the layer kernels sit on the shallowest depth's τ grid
    assert sol.phi_kernel.shape[0] == sol.config["depths"][0] + 1
    assert sol.a_response is None


def test_infinite_depth_rich_linear_approaches_at_order_one_over_depth():
    """|q_L − q_∞| ∝ 1/L for loss and NTK in the rich regime (measured slopes 16 → 32:
    0.98 and 0.93; the 1/L² part is still visible in the NTK at L = 8)."""
    kw = dict(activation="linear", gamma0=1.0, eta0=0.02, steps=5)
    inf = dmft.solve_dmft(*ONE, depth=math.inf, depths=(8, 16, 32, 64), **kw)
    for field in ("loss", "ntk"):
        limit = np.asarray(getattr(inf, field))[-1].ravel()[0]
        gaps = [
            abs(np.asarray(getattr(inf.ladder[k], field))[-1].ravel()[0] - limit) for k in (1, 2)
        ]
        slope = np.log2(gaps[0] / gaps[1])
        assert abs(slope - 1) < 0.15, (field, slope)
    assert 0 < float(inf.depth_error[-1]) < 0.01 * float(inf.loss[-1])


def test_alpha_one_lazy_kernel_closed_form():
    """Linear, one point, lazy: K_L = 2aᴸ + β₀²aᴸ⁻¹ with a = 1 + β₀²/L^{2α}; for α = 1 that tends
    to 2 + β₀² (the blocks vanish at init) instead of (2 + β₀²)e^{β₀²}."""
    for alpha in (0.5, 0.75, 1.0):
        sol = dmft.solve_dmft(
            *ONE,
            depth=8,
            activation="linear",
            gamma0=1e-4,
            eta0=0.05,
            steps=2,
            alpha=alpha,
            beta0=1.3,
        )
        a = 1 + 1.3**2 / 8 ** (2 * alpha)
        np.testing.assert_allclose(sol.ntk[:, 0, 0], 2 * a**8 + 1.3**2 * a**7, rtol=1e-6)


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(dynamics="flow", steps=4), ValueError, "t_max"),
        (dict(dynamics="flow", t_max=-1.0, steps=4), ValueError, "t_max"),
        (dict(dynamics="flow", t_max=1.0, steps=0), ValueError, "steps"),
        (dict(dynamics="flow", t_max=1.0, steps=4, batch_size=1), ValueError, "batch_size"),
        (dict(dynamics="flow", t_max=1.0, steps=4, flow_order=3), ValueError, "flow_order"),
        (dict(t_max=1.0, steps=4), ValueError, "t_max"),
        (dict(depths=(4, 8), steps=4), ValueError, "depths"),
        (dict(depth=math.inf, depths=(8,), steps=4), ValueError, "depths"),
        (dict(depth=math.inf, depths=(8, 12), steps=4), ValueError, "multiple"),
        (dict(depth=math.inf, depths=(16, 8), steps=4), ValueError, "increasing"),
        (dict(depth=2.5, steps=4), TypeError, "depth"),
    ],
)
def test_bad_flow_and_depth_input(monkeypatch, kw, err, match):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(solve_module, "_linear", no_compile)
    monkeypatch.setattr(solve_module, "_monte_carlo", no_compile)
    kw = dict(dict(depth=4, activation="linear"), **kw)
    with pytest.raises(err, match=match):
        dmft.solve_dmft(*ONE, **kw)


def test_simulator_rejects_bad_flow_input():
    with pytest.raises(ValueError, match="substeps"):
        dmft.simulate(*ONE, width=8, depth=2, dynamics="flow", t_max=1.0, steps=2, substeps=0)
    with pytest.raises(ValueError, match="optimizer"):
        dmft.simulate(*ONE, width=8, depth=2, dynamics="flow", t_max=1.0, steps=2, optimizer="adam")
    with pytest.raises(TypeError, match="depth"):
        dmft.simulate(*ONE, width=8, depth=math.inf, steps=2)


def test_extrapolated_loss_is_the_loss_of_the_extrapolated_predictions():
    """Richardson in 1/L combines predictions linearly; the loss is recomputed from them, so it
    is never negative (a linear combination of the per-depth losses went to −1.4e-8 here)."""
    sol = dmft.solve_dmft(
        *ONE, depth=math.inf, activation="linear", gamma0=2.0, eta0=0.02, steps=20, throw=False
    )
    pred = np.asarray(sol.predictions)
    np.testing.assert_allclose(sol.loss, 0.5 * np.mean((1.0 - pred) ** 2, axis=-1), rtol=1e-12)
    assert np.all(np.asarray(sol.loss) >= 0)


X2 = np.array([[1.0, 0.2, -0.5], [0.3, -1.0, 0.8]])
Y2 = np.array([1.0, -0.5])


def test_a_ladder_outside_its_one_over_depth_regime_is_not_converged():
    """Near the stability edge (η₀ = 0.85 here; the L = 32 rung ends at loss 6e4 against 1e-2
    for L = 16) the Richardson limit (5.8e5) is meaningless although every rung is finite:
    dropping the shallowest depth moves it by 36% of the loss, so it is reported, and raised."""
    kw = dict(depth=math.inf, activation="linear", eta0=0.85, steps=10)
    sol = dmft.solve_dmft(X2, Y2, **kw, throw=False)
    assert int(sol.diverged_step) == -1 and np.all(np.isfinite(sol.loss))
    assert not bool(sol.converged)
    assert sol.depth_residual > 0.05
    assert "depth extrapolation" in sol.status and "(8, 16, 32, 64)" in sol.status
    with pytest.raises(dmft.ConvergenceError, match="depth extrapolation") as err:
        dmft.solve_dmft(X2, Y2, **kw)
    assert err.value.residual == pytest.approx(sol.depth_residual)
    # far from the edge the same ladder is in its 1/L regime
    calm = dmft.solve_dmft(X2, Y2, **{**kw, "eta0": 0.1})
    assert bool(calm.converged) and calm.status == "ok" and calm.depth_residual < 0.01


def test_depth_relative_error_ignores_noise_and_measures_small_losses_against_a_floor():
    from dmft.results import depth_relative_error

    loss = np.array([1.0, 0.5, 1e-20])
    err = np.array([0.0, 0.1, 1e-3])
    # inside three standard errors: ignored
    assert depth_relative_error(loss, err, np.array([0.0, 0.04, 1.0]), 0.05, np) == 0
    # 0.1 of a loss of 0.5; a loss below 5% of its start is measured against 0.05
    assert depth_relative_error(loss, err, np.zeros(3), 0.05, np) == pytest.approx(0.2)
    assert depth_relative_error(loss, err * [1, 0.1, 100], np.zeros(3), 0.05, np) == 2.0


def test_exact_path_still_checks_the_sampling_options():
    for kw, name in [
        (dict(samples=0), "samples"),
        (dict(replicas=1), "replicas"),
        (dict(seed=-1), "seed"),
    ]:
        with pytest.raises(ValueError, match=name):
            dmft.solve_dmft(*ONE, depth=2, activation="linear", steps=2, **kw)
