"""Saving and loading results: every result type round-trips exactly, metadata is recorded,
and damaged, foreign or newer files raise a clear error instead of returning numbers."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

import dmft
from dmft import io
from dmft.convergence import ConvergenceStudy

X = np.random.default_rng(0).normal(size=(3, 4))
Y = np.array([1.0, -1.0, 0.5])
XT = np.random.default_rng(1).normal(size=(2, 4))
YT = np.array([0.3, -0.2])


def assert_same(a, b, where="result"):
    """Equal in type, and field by field: arrays in dtype, shape and every bit (NaN = NaN)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray | np.generic | jax.Array):
        a, b2 = np.asarray(a), b
        assert isinstance(b2, np.ndarray | np.generic), (where, type(b2))
        b2 = np.asarray(b2)
        assert a.dtype == b2.dtype and a.shape == b2.shape, (where, a.dtype, b2.dtype)
        assert np.array_equal(a, b2, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, tuple | list):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _synthetic_study(nan=False):
    rng = np.random.default_rng(0)
    q = ("loss", "ntk")
    return ConvergenceStudy(
        widths=(8, 16),
        depths=(2, 4),
        seeds=3,
        quantities=q,
        values={k: rng.normal(size=(2, 2, 3, 4, 2)) for k in q},
        reference={k: rng.normal(size=(2, 4, 2)) for k in q},
        reference_error={k: np.zeros((2, 4, 2)) for k in q},
        limit={k: rng.normal(size=(4, 2)) for k in q},
        limit_error={k: np.full((4, 2), np.nan if nan else 0.01) for k in q},
        limit_depths=(4, 8),
        times=np.arange(4.0),
        settings={"activation": "linear", "eta0": 0.05, "depths": (2, 4), "x": None},
        timings={"simulate": 1.5, "points": {"8x2": 0.25}},
    )


RESULTS = {
    "linear solution with test set": lambda: dmft.solve_dmft(
        X, Y, depth=3, activation="linear", eta0=0.1, steps=4, X_test=XT, y_test=YT
    ),
    "relu Monte Carlo solution": lambda: dmft.solve_dmft(
        X, Y, depth=2, activation="relu", eta0=0.1, steps=3, samples=512, throw=False
    ),
    "infinite-depth flow solution with its ladder": lambda: dmft.solve_dmft(
        X,
        Y,
        depth=math.inf,
        depths=(2, 4),
        activation="linear",
        dynamics="flow",
        t_max=0.5,
        steps=4,
    ),  # fmt: skip
    "simulation with params and two-time kernels": lambda: dmft.simulate(
        X,
        Y,
        width=16,
        depth=2,
        eta0=0.1,
        steps=3,
        seeds=2,
        X_test=XT,
        y_test=YT,
        return_params=True,
        two_time_layers=(1, 3),
    ),  # fmt: skip
    "lazy kernels": lambda: dmft.lazy_kernels(X, depth=3, activation="tanh"),
    "sweep": lambda: dmft.hyperparameter_sweep(
        X, Y, values=[0.05, 0.1], widths=(8,), depths=(2,), steps=2, seeds=2
    ),
    "coordinate check": lambda: dmft.coord_check(X, Y, widths=(8, 16), depths=(2,), seeds=2),
    "convergence study": lambda: _synthetic_study(nan=True),
    "rate fit": lambda: dmft.fit_depth_rate(_synthetic_study(), "loss", dmft=True),
    "joint fit": lambda: dmft.fit_joint(_synthetic_study(), "ntk"),
}


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_every_result_type_round_trips_exactly(name, tmp_path):
    result = RESULTS[name]()
    path = tmp_path / "r.npz"
    result.save(path)
    back = dmft.load(path)
    assert_same(result, back)
    assert repr(back) == repr(result)
    dmft.save(back, tmp_path / "again")  # the suffix is added; a loaded result saves again
    assert_same(result, dmft.load(tmp_path / "again.npz"))
    assert sorted(os.listdir(tmp_path)) == ["again.npz", "r.npz"]  # no temporary files left


def test_metadata_records_versions_device_timings_and_convergence(tmp_path):
    sol = dmft.solve_dmft(X, Y, depth=2, activation="relu", eta0=0.1, steps=3, samples=512,
                          throw=False)  # fmt: skip
    sol.save(tmp_path / "s.npz")
    meta = io.read_metadata(tmp_path / "s.npz")
    assert meta["kind"] == "Solution" and meta["format_version"] == io.FORMAT_VERSION
    assert meta["versions"]["jax"] == jax.__version__
    assert meta["versions"]["dmft"].startswith(dmft.__version__)
    assert meta["device"].startswith(jax.devices()[0].platform)
    assert meta["timings"]["wall_seconds"] > 0
    facts = meta["facts"]
    assert facts["status"] == sol.status and facts["method"] == "monte-carlo"
    assert facts["converged"] == bool(sol.converged) and facts["diverged_step"] == -1
    assert dmft.load(tmp_path / "s.npz").config == sol.config


def _corrupt_one_array_byte(path):
    """Flip a byte inside an array's data and repair the zip's CRC, as a disk error plus a
    careless copy could: only the recorded digest can tell."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in members if n.startswith("loss"))
    data = bytearray(members[name])
    data[-3] ^= 0xFF
    members[name] = bytes(data)
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)


def test_damaged_files_raise_clear_errors(tmp_path):
    sol = dmft.solve_dmft(X, Y, depth=2, activation="linear", eta0=0.1, steps=3)
    good = tmp_path / "good.npz"
    sol.save(good)
    blob = good.read_bytes()
    for cut in (10, len(blob) // 2, len(blob) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(blob[:cut])
        with pytest.raises(ValueError, match="truncated or corrupted"):
            dmft.load(bad)
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(blob)
    _corrupt_one_array_byte(flipped)
    with pytest.raises(ValueError, match="do not match the digest"):
        dmft.load(flipped)
    # a byte flipped in place (the zip's CRC then disagrees)
    raw = bytearray(blob)
    raw[len(raw) // 3] ^= 0xFF
    crc = tmp_path / "crc.npz"
    crc.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        dmft.load(crc)
    with pytest.raises(FileNotFoundError, match="no such file"):
        dmft.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "foreign.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="not written by dmft.save"):
        dmft.load(tmp_path / "foreign.npz")


def _rewrite_meta(path, change):
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    arrays = {n[:-4]: np.load(path)[n[:-4]] for n in members}
    meta = json.loads(str(arrays.pop(io._META)))
    change(meta)
    meta["tree_digest"] = io._tree_digest(meta["tree"])  # as the other version would write it
    np.savez(path, **arrays, **{io._META: np.asarray(json.dumps(meta))})


def test_files_from_other_versions_load_or_say_why_not(tmp_path):
    sol = dmft.solve_dmft(X, Y, depth=2, activation="linear", eta0=0.1, steps=3)
    path = tmp_path / "s.npz"
    sol.save(path)
    # another library version, same format: loads
    _rewrite_meta(path, lambda m: m["versions"].update(dmft="0.0.1+000000000000"))
    assert_same(sol, dmft.load(path))
    # a newer format: refused, saying what to do
    _rewrite_meta(path, lambda m: m.update(format_version=io.FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="upgrade dmft"):
        dmft.load(path)
    # a field this version does not have
    sol.save(path)
    _rewrite_meta(path, lambda m: m["tree"]["fields"].update(new_field=1))
    with pytest.raises(ValueError, match="fields \\['new_field'\\]"):
        dmft.load(path)
    sol.save(path)
    _rewrite_meta(path, lambda m: m["tree"].update(__result__="Mystery"))
    with pytest.raises(ValueError, match="'Mystery'"):
        dmft.load(path)


def test_studies_saved_before_dmft_save_still_load(tmp_path):
    from dmft.cache import write_npz

    study = _synthetic_study()
    arrays = {"times": study.times}
    for q in study.quantities:
        for part in ("values", "reference", "reference_error", "limit", "limit_error"):
            arrays[f"{part}/{q}"] = getattr(study, part)[q]
    meta = dict(
        kind="ConvergenceStudy", widths=[8, 16], depths=[2, 4], seeds=3,
        quantities=list(study.quantities), limit_depths=[4, 8], settings={}, timings={}, cached=0,
    )  # fmt: skip
    write_npz(tmp_path / "old.npz", arrays, meta)
    back = dmft.load_study(tmp_path / "old.npz")
    for q in study.quantities:
        np.testing.assert_array_equal(back.values[q], study.values[q])
        np.testing.assert_array_equal(back.limit_error[q], study.limit_error[q])


def test_bad_arguments_and_traced_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="`result` must be a result of dmft"):
        dmft.save({"loss": np.zeros(3)}, tmp_path / "x.npz")
    lazy = dmft.lazy_kernels(X, depth=2, activation="linear")

    def inside(ntk):
        dmft.save(dataclasses.replace(lazy, ntk=ntk), tmp_path / "t.npz")
        return ntk

    with pytest.raises(TypeError, match="traced"):
        jax.jit(inside)(lazy.ntk)
    assert not (tmp_path / "t.npz").exists()


KILLED_WRITER = """
import os, signal, sys
import numpy as np
import dmft
sol = dmft.lazy_kernels(np.eye(2), depth=2, activation="linear")
big = dmft.lazy_kernels(np.eye(300), depth=40, activation="linear")  # ~30 MB of kernels
sol.save(sys.argv[1])
real = np.lib.format.write_array
def slow(fp, array, *a, **k):  # kill this process half way through writing the new file
    real(fp, array, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
np.lib.format.write_array = slow
big.save(sys.argv[1])
"""


def test_a_killed_save_leaves_the_old_file(tmp_path):
    target = tmp_path / "r.npz"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True, timeout=300
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    back = dmft.load(target)  # the old, complete result
    assert back.ntk.shape == (2, 2)
    leftovers = [f for f in os.listdir(tmp_path) if f != "r.npz"]
    assert all(f.startswith(".partial") for f in leftovers)  # never under the real name
