"""Interrupted work: a depth ladder and a hyperparameter sweep killed half way resume from what
they finished, recompute nothing finished, and end with the numbers of an uninterrupted run."""

import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import dmft
from dmft import solve, transfer

ENV = {**os.environ, "JAX_ENABLE_X64": "1", "MPLBACKEND": "Agg"}  # as conftest does here
X = np.array([[1.0, 0.2, -0.5], [0.3, -1.0, 0.8]])
Y = np.array([1.0, -0.5])
LADDER = dict(depth=math.inf, depths=(1, 2, 4), activation="relu", eta0=0.2, steps=3,
              samples=256, replicas=2, tol=1.0)  # fmt: skip
SINGLE = dict(depth=2, activation="relu", eta0=0.2, steps=3, samples=256, replicas=4, tol=1.0)
SWEEP = dict(values=[0.05, 0.1, 0.2], widths=(8,), depths=(1, 2), steps=2, seeds=2,
             activation="linear", center=True)  # fmt: skip

# Runs `call` in a fresh process and kills it (SIGKILL, no clean-up) right after the
# `after`-th finished unit has been written to disk.
KILLER = """
import math, os, signal, sys
import numpy as np
import dmft
from dmft import cache, io
X = np.array([[1.0, 0.2, -0.5], [0.3, -1.0, 0.8]])
Y = np.array([1.0, -0.5])
folder, after, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
written = []

def wrap(real):
    def inner(*a, **k):
        real(*a, **k)
        written.append(1)
        if len(written) == after:
            os.kill(os.getpid(), signal.SIGKILL)
    return inner

if what == "ladder":
    import dmft.solve as solve
    solve.save = wrap(solve.save)
    dmft.solve_dmft(X, Y, checkpoint=folder, **{})
elif what == "replicas":
    cache.write_npz = wrap(cache.write_npz)
    dmft.solve_dmft(X, Y, checkpoint=folder, **{})
else:
    cache.write_npz = wrap(cache.write_npz)
    dmft.hyperparameter_sweep(X, Y, cache_dir=folder, **{})
""".format(repr(LADDER).replace("inf", "math.inf"), repr(SINGLE), repr(SWEEP))


def _kill_after(folder, after, what):
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(folder), str(after), what],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    files = sorted(os.listdir(folder))
    assert not any(f.startswith(".partial") for f in files)
    return files


def test_a_killed_depth_ladder_resumes_from_its_finished_depths(tmp_path, monkeypatch):
    files = _kill_after(tmp_path, 2, "ladder")
    rungs = [f for f in files if "replica" not in f]  # the last rung's replicas may remain
    assert len(rungs) == 2 and all(f.endswith(("-L1.npz", "-L2.npz")) for f in rungs)

    solved = []
    real = solve._solve_once

    def counting(problem, depth, *a, **k):
        solved.append(depth)
        return real(problem, depth, *a, **k)

    monkeypatch.setattr(solve, "_solve_once", counting)
    resumed = dmft.solve_dmft(X, Y, checkpoint=tmp_path, **LADDER)
    assert solved == [4]  # only the depth the killed run had not finished
    again = dmft.solve_dmft(X, Y, checkpoint=tmp_path, **LADDER)
    assert solved == [4]  # everything is on disk now
    monkeypatch.setattr(solve, "_solve_once", real)
    fresh = dmft.solve_dmft(X, Y, **LADDER)
    for name in ("loss", "predictions", "ntk", "loss_error", "depth_error"):
        np.testing.assert_array_equal(np.asarray(getattr(resumed, name)), getattr(fresh, name))
        np.testing.assert_array_equal(np.asarray(getattr(again, name)), getattr(fresh, name))
    # other settings are other solves: nothing is reused
    dmft.solve_dmft(X, Y, checkpoint=tmp_path, **{**LADDER, "eta0": 0.1})
    assert len(os.listdir(tmp_path)) == 6


def test_a_killed_single_solve_resumes_from_its_finished_replicas(tmp_path, monkeypatch):
    """One finite-depth Monte Carlo solve: each finished replica is on disk, so a solve killed
    in its third replica recomputes only the last two, and ends with the same numbers."""
    files = _kill_after(tmp_path, 2, "replicas")
    assert len(files) == 2 and all("-replica" in f for f in files)

    ran = []
    real = solve._monte_carlo_replica

    def counting(*a, **k):
        ran.append(int(a[-1]))
        return real(*a, **k)

    monkeypatch.setattr(solve, "_monte_carlo_replica", counting)
    resumed = dmft.solve_dmft(X, Y, checkpoint=tmp_path, **SINGLE)
    assert ran == [2, 3]
    assert [f for f in os.listdir(tmp_path) if "replica" in f] == []  # folded into the solve
    monkeypatch.setattr(solve, "_monte_carlo_replica", real)
    fresh = dmft.solve_dmft(X, Y, **SINGLE)  # not checkpointed: all replicas in one program
    for name in ("loss", "predictions", "ntk", "loss_error", "phi_two_time", "g_two_time"):
        np.testing.assert_array_equal(np.asarray(getattr(resumed, name)), getattr(fresh, name))


def test_a_killed_sweep_resumes_without_recomputing_finished_points(tmp_path, monkeypatch):
    files = _kill_after(tmp_path, 4, "sweep")
    assert len(files) == 4

    trained = []
    real = transfer.simulate

    def counting(*a, **k):
        trained.append((k["depth"], k["eta0"]))
        return real(*a, **k)

    monkeypatch.setattr(transfer, "simulate", counting)
    resumed = dmft.hyperparameter_sweep(X, Y, cache_dir=tmp_path, **SWEEP)
    assert len(trained) == 6 - 4  # the two points the killed run had not finished
    monkeypatch.setattr(transfer, "simulate", real)
    fresh = dmft.hyperparameter_sweep(X, Y, **SWEEP)
    np.testing.assert_array_equal(resumed.loss, fresh.loss)
    np.testing.assert_array_equal(resumed.stderr, fresh.stderr)
    assert resumed.status == "ok"


def test_sweep_status_names_diverged_points_and_checkpoints_refuse_tracing():
    sweep = dmft.hyperparameter_sweep(X, Y, values=[0.1, 1e4], widths=(8,), depths=(1,),
                                      steps=3, seeds=2, activation="linear")  # fmt: skip
    assert sweep.status.startswith("diverged at 1 of 2 points") and "10000.0" in sweep.status
    import jax

    with pytest.raises(ValueError, match="`checkpoint` needs concrete"):
        jax.vmap(
            lambda e: (
                dmft.solve_dmft(
                    X, Y, depth=1, activation="linear", eta0=e, steps=2, checkpoint="unused"
                ).loss
            )  # fmt: skip
        )(np.array([0.1, 0.2]))
