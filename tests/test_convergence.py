"""The convergence study: fits on synthetic grids with known rates, a small real study, its
cache (including a killed run resumed), persistence and the command line."""

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

import dmft
from dmft import convergence
from dmft.cache import Cache, read_npz, write_npz
from dmft.convergence import ConvergenceStudy, convergence_study, fit_depth_rate, fit_joint
from dmft.settings import check_only

WIDTHS = (64, 128, 256, 512, 1024)
DEPTHS = (2, 4, 8, 16, 32)


def _synthetic(*, width_power=-1.0, a=0.3, b=0.5, sigma=0.4, seeds=64, seed=0, elements=3):
    """A study whose networks are q∞∞ + a/N + b/L + σ N^{p/2} ξ, exactly: the width exponent of
    the mean-squared deviation is p (when the noise dominates) and the depth exponent −1."""
    rng = np.random.default_rng(seed)
    T1 = 4
    q_inf = rng.normal(size=(T1, elements))
    n = np.asarray(WIDTHS, float)[:, None, None, None, None]
    L = np.asarray(DEPTHS, float)[None, :, None, None, None]
    noise = rng.normal(size=(len(WIDTHS), len(DEPTHS), seeds, T1, elements))
    values = q_inf + a / n + b / L + sigma * n ** (width_power / 2) * noise
    reference = q_inf[None] + b / np.asarray(DEPTHS, float)[:, None, None]
    zeros = np.zeros_like(reference)
    return ConvergenceStudy(
        widths=WIDTHS,
        depths=DEPTHS,
        seeds=seeds,
        quantities=("loss",),
        values={"loss": values},
        reference={"loss": reference},
        reference_error={"loss": zeros},
        limit={"loss": q_inf},
        limit_error={"loss": np.zeros_like(q_inf)},
        limit_depths=(4, 8),
        times=np.arange(T1, dtype=float),
        settings={},
        timings={"simulate": 0.0, "solve": 0.0, "limit": 0.0, "points": {}},
    )


@pytest.mark.parametrize("power", [-1.0, -0.5])
def test_width_fit_recovers_the_exponent_it_is_given(power):
    fit = dmft.fit_width_rate(_synthetic(width_power=power, a=0.0), "loss")
    assert fit.interval[0] < power < fit.interval[1], fit
    assert abs(fit.exponent - power) < 0.1, fit
    assert fit.consistent == (power == -1.0)  # the −1 check fails for a wrong exponent


def test_depth_fits_recover_one_over_L():
    study = _synthetic(a=0.0, sigma=0.05, seeds=128)
    fit = fit_depth_rate(study, "loss")
    assert fit.interval[0] < -1.0 < fit.interval[1] and abs(fit.exponent + 1) < 0.1, fit
    dm = fit_depth_rate(study, "loss", dmft=True)
    assert dm.exponent == pytest.approx(-1.0, abs=1e-9)  # reference − limit is exactly b/L


def test_depth_correction_recovers_the_asymptotic_exponent():
    study = _synthetic(a=0.0, sigma=0.01, seeds=128)
    depths = np.asarray(DEPTHS, float)[:, None, None]
    study.reference["loss"] += -0.3 / depths**2  # b/L − 0.3/L²: not yet 1/L at small L
    study.values["loss"] += -0.3 / depths[None, :, None] ** 2
    plain = fit_depth_rate(study, "loss", dmft=True)
    fixed = fit_depth_rate(study, "loss", dmft=True, correction=True)
    assert abs(plain.exponent + 1) > 0.1 and not plain.consistent
    assert abs(fixed.exponent + 1) < 0.05 and fixed.consistent
    nets = fit_depth_rate(study, "loss", correction=True)
    # (its interval covers the seeds' noise, almost none here, not the error of the fitted law)
    assert abs(nets.exponent + 1) < 0.05
    np.testing.assert_allclose(fixed.curve(fixed.x), fixed.y[:, 0], rtol=0.05)


def test_depth_fit_subtracts_the_ensemble_noise():
    # no bias at all: the mean's offset is pure noise, which the fit must not report as a rate
    study = _synthetic(a=0.0, b=0.0, sigma=0.3, seeds=16)
    with pytest.raises(ValueError, match="below the ensemble's noise"):
        fit_depth_rate(study, "loss")


def test_joint_fit_recovers_a_and_b_and_explains_the_grid():
    study = _synthetic(seeds=256)
    joint = fit_joint(study, "loss", time="all")
    assert np.allclose(joint.a, 0.3, atol=0.3) and np.allclose(joint.b, 0.5, atol=0.02)
    assert 0.7 < joint.chi2 / joint.dof < 1.3 and joint.p_value > 1e-3
    # a model that misses a term does not explain the grid
    bad = _synthetic(seeds=256)
    bad.values["loss"] += 2.0 / np.asarray(DEPTHS, float)[None, :, None, None, None] ** 2
    worse = fit_joint(bad, "loss", time="all")
    assert worse.chi2 / worse.dof > 5 and worse.p_value < 1e-6


# ----- a small real study -----
SETTINGS = dict(activation="linear", eta0=0.05, steps=3, center=True)


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(2, 4)), np.array([1.0, -1.0])


SMALL_GRID = dict(widths=(8, 16), depths=(1, 2), seeds=3, limit_depths=(2, 4))


def _small(data, cache_dir):
    """The small study (2 widths × 2 depths, its DMFT at both depths and at L = ∞)."""
    return convergence_study(*data, **SMALL_GRID, cache_dir=cache_dir, **SETTINGS)


@pytest.fixture(scope="module")
def small_study(small_data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return _small(small_data, cache), cache


def test_study_matches_direct_calls(small_data, small_study):
    X, y = small_data
    study, _ = small_study
    T1 = SETTINGS["steps"] + 1
    assert study.values["ntk"].shape == (2, 2, 3, T1, 4)
    assert study.values["kernels"].shape == (2, 2, 3, T1, 6 * 4)
    sim = dmft.simulate(
        X, y, width=16, depth=2, seeds=3, seed=convergence.cell_seed(0, 16, 2), **SETTINGS
    )
    np.testing.assert_array_equal(study.values["loss"][1, 1, :, :, 0], sim.loss)
    sol = dmft.solve_dmft(X, y, depth=2, **SETTINGS)
    np.testing.assert_allclose(study.reference["ntk"][1], np.asarray(sol.ntk).reshape(T1, 4))
    lim = dmft.solve_dmft(X, y, depth=float("inf"), depths=(2, 4), **SETTINGS)
    np.testing.assert_allclose(study.limit["loss"][:, 0], lim.loss)
    np.testing.assert_allclose(study.limit_error["loss"][:, 0], lim.depth_error)
    # kernels: Φ at ℓ − 1 = 0, L/2, L, then G at the same layers
    phi = np.asarray(sim.phi_kernel)[:, [0, 1, 2]]  # (seeds, 3, T+1, P, P)
    got = study.values["kernels"][1, 1].reshape(3, T1, 6, 2, 2)[:, :, :3]
    np.testing.assert_array_equal(got, np.moveaxis(phi, 1, 2))
    msd, se = study.msd("loss")
    direct = np.mean((sim.loss - np.asarray(sol.loss)) ** 2, axis=0)
    np.testing.assert_allclose(msd[1, 1], direct)
    assert np.all(se >= 0)


def test_every_cell_has_its_own_networks():
    seeds = {convergence.cell_seed(0, n, L) for n in WIDTHS for L in DEPTHS}
    assert len(seeds) == len(WIDTHS) * len(DEPTHS)
    assert convergence.cell_seed(0, 64, 2) == convergence.cell_seed(0, 64, 2)
    assert convergence.cell_seed(1, 64, 2) not in seeds


def test_rerun_is_served_from_the_cache(small_data, small_study, monkeypatch):
    study, cache = small_study

    def forbidden(*a, **k):
        if not check_only():  # the up-front argument check is allowed; a computation is not
            raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr(convergence, "simulate", forbidden)
    monkeypatch.setattr(convergence, "solve_dmft", forbidden)
    again = _small(small_data, cache)
    assert again.cached == 2 * 2 + 2 + 1
    for q in study.quantities:
        np.testing.assert_array_equal(again.values[q], study.values[q])


def test_cache_key_changes_with_settings_and_bad_entries_are_recomputed(
    small_data, small_study, tmp_path
):
    X, y = small_data
    _, cache = small_study
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    for f in os.listdir(cache):  # a copy of the finished points, one of them corrupted
        (cache_dir / f).write_bytes((cache / f).read_bytes())
    victim = sorted(cache_dir.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = _small(small_data, cache_dir)
    assert study.cached == 2 * 2 + 2 + 1 - 1
    assert any("unreadable cache entry" in str(w.message) for w in caught)
    read_npz(victim)  # rewritten whole
    changed = convergence_study(
        X,
        y,
        widths=(8,),
        depths=(1,),
        seeds=3,
        limit=False,
        cache_dir=cache_dir,
        **{**SETTINGS, "eta0": 0.04},
    )
    assert changed.cached == 0


def test_save_and_load_round_trip(small_study, tmp_path):
    study, _ = small_study
    path = tmp_path / "study.npz"
    study.save(path)
    back = dmft.load_study(path)
    for q in study.quantities:
        for name in ("values", "reference", "reference_error", "limit", "limit_error"):
            np.testing.assert_array_equal(getattr(back, name)[q], getattr(study, name)[q])
    assert (back.widths, back.depths, back.seeds) == (study.widths, study.depths, study.seeds)
    assert back.settings == study.settings
    assert str(convergence.summarize(back)) == str(convergence.summarize(study))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        dmft.load_study(path)


def test_write_npz_is_atomic_and_never_leaves_partial_files(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"
    write_npz(target, {"a": np.arange(3)}, {"k": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        write_npz(target, {"a": np.arange(5)}, {"k": 2})
    arrays, meta = read_npz(target)  # the old file, whole
    assert meta == {"k": 1} and arrays["a"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["x.npz"]
    assert Cache(None).get("anything") is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(widths=(8, 8)), "`widths` must not repeat"),
        (dict(widths=(0, 8)), "`widths` must be an int >= 1"),
        (dict(seeds=1), "`seeds` must be an int >= 2"),
        (dict(quantities=("loss", "weights")), "`quantities` entries must be in"),
        (dict(quantities=("test_loss",)), "needs `X_test`"),
        (dict(width=8), "`width` is set by the study"),
        (dict(solver_options=dict(eta0=0.1)), "`solver_options` must not set 'eta0'"),
        (dict(limit_depths=(4, 6)), "depths"),
        (dict(eta0=-1.0), "`eta0` must be in"),
        (dict(center=True, optimizer="adam"), "optimizer"),
        (dict(solver_options=dict(samples=3), activation="relu"), "`samples` must be an int"),
    ],
)
def test_bad_input_fails_before_any_compilation(small_data, monkeypatch, kwargs, match):
    sim = importlib.import_module("dmft.simulate")  # the modules, not the functions
    solve = importlib.import_module("dmft.solve")

    def compiled(*a, **k):
        raise AssertionError("compiled before validating")

    for mod, name in ((sim, "_run_chunk"), (solve, "_linear"), (solve, "_monte_carlo")):
        monkeypatch.setattr(mod, name, compiled)
    args = dict(widths=(8, 16), depths=(1, 2), seeds=3, **SETTINGS)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        convergence_study(*small_data, **args)


# ----- killed and resumed, and the command line -----
TOML = """
[data]
points = 2
dim = 4
seed = 3
[settings]
activation = "linear"
eta0 = 0.05
steps = 3
center = true
[study]
widths = [8, 16, 32]
depths = [1, 2]
seeds = 3
seed = 5
limit_depths = [2, 4]
[output]
cache = "cache"
result = "study.npz"
figure = "study.png"
"""

KILLER = """
import os, signal, sys
import dmft.convergence as c
from dmft.settings import check_only
real, calls = c.simulate, [0]
def simulate(*a, **k):
    if check_only():  # the up-front argument check
        return real(*a, **k)
    calls[0] += 1
    if calls[0] == 3:  # two network points are finished and cached: die without cleanup
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
c.simulate = simulate
from dmft.cli import main
main(sys.argv[1:])
"""


def _run(args, cwd):
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_ENABLE_X64": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_killed_study_resumes_without_recomputing_finished_points(tmp_path, monkeypatch):
    (tmp_path / "s.toml").write_text(TOML)
    killed = _run([sys.executable, "-c", KILLER, "study", "s.toml", "--quiet"], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 2 + 1 + 2  # two solves, the L = ∞ solve, two network points
    assert not any(f.startswith(".partial") for f in files)
    assert not (tmp_path / "study.npz").exists()

    from dmft import cli

    computed = []
    real = convergence.simulate

    def counting(*a, **k):
        if not check_only():
            computed.append((k["width"], k["depth"]))
        return real(*a, **k)

    monkeypatch.setattr(convergence, "simulate", counting)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["study", "s.toml", "--quiet"]) == 0
    assert len(computed) == 3 * 2 - 2  # only the unfinished network points
    resumed = dmft.load_study(tmp_path / "study.npz")
    assert resumed.cached == 5
    # the resumed study equals an uninterrupted one
    cfg, data = cli.load_config(tmp_path / "s.toml")
    fresh = convergence_study(
        data["X"], data["y"], **cfg["study"], **cfg["settings"], cache_dir=None
    )
    for q in fresh.quantities:
        np.testing.assert_array_equal(resumed.values[q], fresh.values[q])
        np.testing.assert_array_equal(resumed.limit[q], fresh.limit[q])


def test_cli_help_and_end_to_end(tmp_path):
    top = _run([sys.executable, "-m", "dmft.cli", "--help"], tmp_path)
    assert top.returncode == 0 and "study" in top.stdout and "demo" in top.stdout
    helped = _run([sys.executable, "-m", "dmft.cli", "study", "--help"], tmp_path)
    assert helped.returncode == 0
    for word in ("config", "--cache", "--out", "--figure", "--quiet", "[settings]", "[study]"):
        assert word in helped.stdout, word
    cfg = TOML.replace("widths = [8, 16, 32]", "widths = [8, 16]").replace(
        "depths = [1, 2]", "depths = [1]"
    )
    (tmp_path / "s.toml").write_text(cfg.replace("limit_depths = [2, 4]", "limit = false"))
    done = _run([sys.executable, "-m", "dmft.cli", "study", "s.toml", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "width exponent of loss" in done.stdout
    assert (tmp_path / "study.png").stat().st_size > 1000
    study = dmft.load_study(tmp_path / "study.npz")
    assert study.values["loss"].shape[:3] == (2, 1, 3) and study.limit is None
    bad = _run([sys.executable, "-m", "dmft.cli", "study", "missing.toml"], tmp_path)
    assert bad.returncode != 0
    (tmp_path / "b.toml").write_text("[study]\nwidths=[8]\n[stuff]\n")
    bad = _run([sys.executable, "-m", "dmft.cli", "study", "b.toml"], tmp_path)
    assert bad.returncode != 0 and "unknown tables" in bad.stderr
    json.dumps(study.timings)  # timings are plain data


def test_extrapolate_width_recovers_intercept_and_matches_lstsq():
    """Synthetic ensembles with mean exactly q∞ + a/N: the intercept is q∞, and on real
    ensembles the result equals a direct weighted least-squares fit."""
    X, y = np.ones((1, 1)), np.ones(1)
    runs = [
        dmft.simulate(X, y, width=n, depth=2, activation="linear", steps=3, seeds=4, center=True)
        for n in (16, 32, 64)
    ]
    rng = np.random.default_rng(0)
    fake = []
    for r in runs:
        n = r.config["width"]
        noise = rng.normal(size=(4, 4))
        noise -= noise.mean(axis=0)  # the mean is exactly 0.3 + 2/N
        fake.append(dataclasses.replace(r, loss=0.3 + 2.0 / n + 0.01 * noise))
    mean, se = dmft.extrapolate_width(fake)
    np.testing.assert_allclose(mean, 0.3, rtol=1e-10)
    assert np.all(se > 0)

    mean, se = dmft.extrapolate_width(runs)
    widths = np.array([16.0, 32.0, 64.0])
    for t in range(1, 4):
        s = np.array([r.stderr()[t] for r in runs])
        m = np.array([r.mean()[t] for r in runs])
        A = np.stack([np.ones(3), 1 / widths], axis=1) / s[:, None]
        coef = np.linalg.lstsq(A, m / s, rcond=None)[0]
        np.testing.assert_allclose(mean[t], coef[0], rtol=1e-10)
        np.testing.assert_allclose(se[t], np.sqrt(np.linalg.inv(A.T @ A)[0, 0]), rtol=1e-10)
    np.testing.assert_allclose(mean[0], runs[0].mean()[0])  # centred: no spread at t = 0
    assert se[0] == 0.0

    with pytest.raises(ValueError, match="two or more distinct widths"):
        dmft.extrapolate_width(runs[:1])
    one_seed = dmft.simulate(X, y, width=8, depth=2, activation="linear", steps=3, seeds=1)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        dmft.extrapolate_width([runs[0], one_seed])
