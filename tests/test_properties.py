"""Property-based tests (hypothesis) of the public entry points' contract.

Every call of ``solve_dmft``, ``simulate``, ``lazy_kernels``, ``lazy_errors`` and every
``save``/``load`` round trip ends in one of three ways:

(a) a result whose status is "ok" and whose loss, predictions and NTK are all finite;
(b) with ``throw=False``, a result whose status says what went wrong ("diverged…", "not
    converged…"); with ``throw=True`` the same as ``dmft.DivergenceError``/``ConvergenceError``;
(c) bad input: a ``ValueError``/``TypeError`` that names the offending argument in backticks,
    raised before anything is compiled (``dmft.settings.checking_only`` raises it too, and so
    does the real call with the compiled programs replaced by a tripwire).

Anything else (another exception type, NaN with status "ok", a bad value that is accepted) is a
bug. Examples start from a few valid *presets* (the static settings that fix a compiled
program, so JAX compiles each once for the whole file) and vary the traced values (data, η₀,
γ₀, β₀, batches, seeds) freely; at most one argument is replaced by a known-bad value, so a
failure shrinks to a one-line reproducer. Runs are derandomized: CI sees the same examples
every time. ``--hypothesis-show-statistics`` prints the counts; this module also prints the
number of distinct inputs each property tried.
"""

import collections
import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from unittest import mock

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dmft
from dmft.settings import checking_only

solve_module = importlib.import_module("dmft.solve")
sim_module = importlib.import_module("dmft.simulate")

NAN, INF = math.nan, math.inf
PROFILE = dict(deadline=None, derandomize=True, database=None, print_blob=True)

# ---------------------------------------------------------------------------------------------
# Bookkeeping: distinct inputs per property, reported at the end of the module.

TRIED = collections.defaultdict(set)
OUTCOMES = collections.defaultdict(collections.Counter)


def _key(x):
    """A hashable description of an input (arrays by dtype, shape and values)."""
    if isinstance(x, dict):
        return tuple((k, _key(v)) for k, v in x.items())
    if isinstance(x, list | tuple):
        return (type(x).__name__, tuple(_key(v) for v in x))
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if callable(x):
        return ("callable", getattr(x, "__name__", repr(x)))
    return repr(x)


def _record(prop, inputs, outcome):
    TRIED[prop].add(_key(inputs))
    OUTCOMES[prop][outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print()
        for prop in sorted(TRIED):
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(OUTCOMES[prop].items()))
            print(f"[properties] {prop}: {len(TRIED[prop])} distinct inputs ({outcomes})")


# ---------------------------------------------------------------------------------------------
# The contract.

RESULT_ERRORS = (dmft.DivergenceError, dmft.ConvergenceError)


def _argument_names(fn):
    return set(inspect.signature(fn).parameters) | {"X", "y"}


def assert_names_argument(err, fn, argument=None):
    """A documented input error: ValueError/TypeError naming an argument of ``fn`` in
    backticks (``argument`` itself, when the caller knows which one is bad)."""
    assert isinstance(err, ValueError | TypeError), f"{type(err).__name__}: {err}"
    named = set(re.findall(r"`(\w+)`", str(err)))
    assert named & _argument_names(fn), f"no argument named in backticks: {err}"
    if argument is not None:
        assert argument in named, f"`{argument}` is not named in: {err}"


def assert_finite_result(result):
    """A returned result honours (a) or (b)."""
    status = result.status
    fields = {n: np.asarray(getattr(result, n)) for n in ("loss", "predictions", "ntk")}
    if status == "ok":
        for name, value in fields.items():
            assert np.all(np.isfinite(value)), f"status 'ok' with non-finite {name}: {value}"
    else:
        assert status.startswith(("diverged", "not converged")), status
        assert not np.all([np.all(np.isfinite(v)) for v in fields.values()]) or status.startswith(
            "not converged"
        ), f"status {status!r} although every field is finite"


def assert_same(a, b, where="result"):
    """Equal in type and field by field; arrays in dtype, shape and every bit (NaN = NaN)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray | np.generic) or type(a).__module__.startswith("jax"):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, tuple | list):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, (where, a, b)


def assert_round_trips(result):
    """``save`` then ``load`` gives back the same result, status included."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "r.npz")
        dmft.save(result, path)
        back = dmft.load(path)
    assert_same(result, back)
    if hasattr(result, "status"):
        assert back.status == result.status


def _tripwire(*args, **kwargs):
    raise AssertionError("compiled before validating")


def refusal(fn, compiled, kwargs, bad):
    """Validate ``fn(**kwargs)`` alone (``checking_only``), every compiled program in
    ``compiled`` ((module, name) pairs) replaced by a tripwire. Returns the documented error it
    raised, after checking that the real call raises the same before compiling; None if the
    arguments are valid. ``bad`` is the argument given a known-bad value, or None."""
    with contextlib.ExitStack() as stack:
        for mod, name in compiled:
            stack.enter_context(mock.patch.object(mod, name, _tripwire))
        with checking_only():
            try:
                assert fn(**kwargs) is None
            except (ValueError, TypeError) as err:
                rejected = err
            else:
                assert bad is None, f"`{bad}` = {kwargs.get(bad)!r} was accepted"
                return None
        assert_names_argument(rejected, fn, bad)
        with pytest.raises(type(rejected)) as again:  # the real call, before compiling
            fn(**kwargs)
        assert str(again.value) == str(rejected)
        return rejected


def check_entry_point(fn, compiled, kwargs, *, bad, prop):
    """Run ``fn(**kwargs)`` against the contract (``compiled`` and ``bad`` as for
    ``refusal``); returns the result, or None if the call raised as it should."""
    # 1. bad input is refused by validation alone, and by the real call before compiling
    if refusal(fn, compiled, kwargs, bad) is not None:
        _record(prop, kwargs, "rejected")
        return None
    # 2. the real call: a result that honours the contract, or a documented numerical error
    try:
        result = fn(**kwargs)
    except RESULT_ERRORS as err:
        assert kwargs.get("throw", True), f"throw=False raised {err!r}"
        assert str(err).startswith(("diverged", "not converged")), str(err)
        _record(prop, kwargs, type(err).__name__)
        return None
    assert_finite_result(result)
    if kwargs.get("throw", True):
        assert result.status == "ok", result.status
    _record(prop, kwargs, "ok" if result.status == "ok" else result.status.split(":")[0])
    assert_round_trips(result)
    return result


# ---------------------------------------------------------------------------------------------
# Strategies.

VALUES = [0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-3, 1e3]  # zeros and duplicates come often


@st.composite
def data(draw, P, D):
    """(X, y): finite values of every scale, as float64, float32, int arrays or lists."""
    X = np.array(draw(st.lists(st.sampled_from(VALUES), min_size=P * D, max_size=P * D)))
    X = X.reshape(P, D)
    y = np.array(draw(st.lists(st.sampled_from(VALUES), min_size=P, max_size=P)))
    form = draw(st.sampled_from(["float64", "float32", "int", "list"]))
    if form == "float32":
        X, y = X.astype(np.float32), y.astype(np.float32)
    elif form == "int":
        X, y = np.round(X).astype(np.int64), np.round(y).astype(np.int64)
    elif form == "list":
        X, y = X.tolist(), y.tolist()
    return X, y


def _poison(X, value):
    X = np.array(X, dtype=np.float64)
    X.flat[0] = value
    return X


# Bad values of the data and of arguments shared by solve_dmft and simulate: (name, value), or
# (name, function of the keyword arguments) when the bad value depends on the good one.
DATA_MUTATIONS = [
    ("X", lambda kw: _poison(kw["X"], NAN)),
    ("X", lambda kw: _poison(kw["X"], INF)),
    ("X", lambda kw: np.asarray(kw["X"])[:, 0]),  # 1-d
    ("X", lambda kw: np.asarray(kw["X"])[None]),  # 3-d
    ("X", lambda kw: np.zeros((len(kw["y"]), 0))),  # no columns
    ("X", lambda kw: np.asarray(kw["X"]).astype(str)),
    ("X", lambda kw: np.asarray(kw["X"]) + 0j),
    ("y", lambda kw: _poison(kw["y"], NAN)),
    ("y", lambda kw: _poison(kw["y"], -INF)),
    ("y", lambda kw: np.ones(len(kw["y"]) + 1)),  # wrong length
    ("y", lambda kw: np.asarray(kw["y"])[:, None]),  # shape (P, 1)
    ("y", lambda kw: np.asarray(kw["y"]) > 0),  # booleans
]
SHARED_MUTATIONS = [
    ("depth", 0),
    ("depth", -1),
    ("depth", 2.5),
    ("depth", True),
    ("depth", "2"),
    ("depth", None),
    ("depth", -INF),
    ("steps", -1),
    ("steps", 2.5),
    ("steps", None),
    ("eta0", -0.1),
    ("eta0", NAN),
    ("eta0", INF),
    ("eta0", "0.1"),
    ("eta0", np.ones(2)),
    ("gamma0", 0.0),
    ("gamma0", -1.0),
    ("gamma0", NAN),
    ("gamma0", INF),
    ("beta0", -1.0),
    ("beta0", NAN),
    ("beta0", INF),
    ("alpha", 0.4),
    ("alpha", 1.1),
    ("alpha", NAN),
    ("momentum", -0.1),
    ("momentum", 1.0),
    ("momentum", NAN),
    ("batch_size", 0),
    ("batch_size", -1),
    ("batch_size", 2.5),
    ("batch_size", lambda kw: len(kw["y"]) + 1),
    ("batch_seed", -1),
    ("activation", "gelu"),
    ("activation", ""),
    ("activation", 3),
    ("activation", None),
    ("parameterization", "ntk"),
    ("dynamics", "euler"),
    ("dtype", "float16"),
    ("dtype", "int32"),
    ("dtype", "nonsense"),
    (("X_test", "y_test"), lambda kw: (np.asarray(kw["X"]), None)),  # without y_test
    (("X_test", "y_test"), lambda kw: (_poison(kw["X"], NAN), kw["y"])),
    (("X_test", "y_test"), lambda kw: (np.ones((1, np.shape(kw["X"])[1] + 1)), np.ones(1))),
    (("y_test", "X_test"), lambda kw: (np.ones(2), np.ones((1, np.shape(kw["X"])[1])))),
    ("t_max", 1.0),  # gradient descent has no t_max
]


def _apply(kwargs, mutation):
    """Give one argument (or a pair, such as X_test and y_test) its bad value."""
    if mutation is None:
        return kwargs, None
    name, value = mutation
    kwargs = dict(kwargs)
    value = value(kwargs) if callable(value) and not isinstance(value, type) else value
    if isinstance(name, tuple):
        kwargs.update(zip(name, value, strict=True))
        return kwargs, name[0]
    kwargs[name] = value
    return kwargs, name


@st.composite
def physical(draw):
    """η₀, γ₀, β₀ at and around the edges of their ranges, as Python floats, NumPy scalars
    of either precision or 0-d JAX arrays."""
    values = dict(
        eta0=draw(st.sampled_from([0.0, 1e-12, 0.05, 0.5, 1e6])),
        gamma0=draw(st.sampled_from([1e-8, 0.5, 1.0, 1e4])),
        beta0=draw(st.sampled_from([0.0, 1.0, 3.0, 1e3, 1e6])),
    )
    form = draw(st.sampled_from([float, float, np.float32, np.float64, jnp.asarray]))
    return {k: form(v) for k, v in values.items()}


def _int_forms(draw, kwargs, names):
    """Sizes as Python ints or NumPy integers (both valid)."""
    form = draw(st.sampled_from([int, np.int64, np.int32]))
    for name in names:
        if isinstance(kwargs.get(name), int) and not isinstance(kwargs[name], bool):
            kwargs[name] = form(kwargs[name])


@st.composite
def batch_size(draw, P):
    return draw(st.none() | st.integers(1, P))


# ---------------------------------------------------------------------------------------------
# solve_dmft

SOLVE_PRESETS = [
    dict(P=2, D=2, depth=1, activation="linear", steps=2),
    dict(P=2, D=2, Q=1, depth=1, activation="linear", steps=2),  # with a test point
    dict(P=3, D=1, depth=2, activation="linear", steps=3, momentum=0.9, dtype="float32"),
    dict(P=1, D=1, depth=2, activation="linear", steps=0, alpha=1.0),
    dict(P=2, D=2, depth=INF, depths=(1, 2), activation="linear", steps=2),
    dict(P=2, D=2, depth=1, activation="linear", dynamics="flow", t_max=1.0, steps=2),
    dict(P=2, D=2, depth=1, activation="relu", steps=2, samples=64, replicas=2),
    dict(P=1, D=3, depth=1, activation="tanh", steps=1, samples=32, replicas=2),
]
SOLVE_ONLY_MUTATIONS = [
    ("parameterization", "mup"),
    ("optimizer", "adam"),
    ("depth", 10**9),  # over memory_limit
    ("steps", 10**9),
    ("memory_limit", 10),
    ("tol", 0.0),
    ("tol", NAN),
    ("depths", (1, 2)),  # a ladder for a finite depth
]
MC_MUTATIONS = [
    ("samples", 1),
    ("samples", lambda kw: 2 * (kw["steps"] + 1) * len(kw["y"]) - 1),  # one below 2(T+1)P
    ("samples", 64.0),
    ("replicas", 1),
    ("seed", -1),
]
FLOW_MUTATIONS = [
    ("t_max", 0.0),
    ("t_max", -1.0),
    ("t_max", NAN),
    ("t_max", INF),
    ("flow_order", 3),
    ("steps", 0),
]
LADDER_MUTATIONS = [("depths", (2,)), ("depths", (2, 3)), ("depths", (2, 1)), ("depths", (0, 2))]


@st.composite
def solve_inputs(draw):
    preset = dict(draw(st.sampled_from(SOLVE_PRESETS)))
    P, D, Q = preset.pop("P"), preset.pop("D"), preset.pop("Q", 0)
    X, y = draw(data(P, D))
    kwargs = dict(X=X, y=y, **preset)
    if Q:
        kwargs["X_test"], kwargs["y_test"] = draw(data(Q, D))
    kwargs.update(draw(physical()))
    _int_forms(draw, kwargs, ("depth", "steps", "samples", "replicas"))
    kwargs["throw"] = draw(st.booleans())
    if preset.get("dynamics") != "flow":
        kwargs["batch_size"] = draw(batch_size(P))
    if "samples" in preset:
        kwargs["seed"] = draw(st.integers(0, 2))
    return _apply(kwargs, draw(st.none() | st.sampled_from(solve_mutations(preset))))


def solve_mutations(preset):
    """The known-bad values for a solve_dmft preset."""
    pool = DATA_MUTATIONS + SHARED_MUTATIONS + SOLVE_ONLY_MUTATIONS
    if "samples" in preset:  # there a million steps is refused for its too few `samples`
        pool = [m for m in pool if m != ("steps", 10**9)] + MC_MUTATIONS
    if preset.get("dynamics") == "flow":  # t_max is valid there; a minibatch or momentum is not
        pool = [m for m in pool if m != ("t_max", 1.0)]
        pool += FLOW_MUTATIONS + [("batch_size", 1), ("momentum", 0.5)]
    if preset["depth"] == INF:  # a finite depth with a ladder is refused for the ladder
        pool = [m for m in pool if m[0] != "depths" and m != ("depth", 10**9)]
        pool += LADDER_MUTATIONS
    return pool


def _solve(X, y, **kwargs):
    return dmft.solve_dmft(X, y, **kwargs)


_solve.__signature__ = inspect.signature(dmft.solve_dmft)


@settings(max_examples=150, **PROFILE)
@given(solve_inputs())
@example((dict(X=np.ones((1, 1)), y=np.ones(1), depth=1, activation="linear", steps=1), None))
def test_solve_dmft_contract(case):
    kwargs, bad = case
    check_entry_point(
        _solve,
        [(solve_module, "_linear"), (solve_module, "_monte_carlo")],
        kwargs,
        bad=bad,
        prop="solve_dmft",
    )


# ---------------------------------------------------------------------------------------------
# simulate

SIM_PRESETS = [
    dict(P=2, D=2, width=8, depth=1, activation="relu", steps=2, seeds=2),
    dict(P=3, D=1, width=4, depth=2, activation="linear", steps=3, momentum=0.9, dtype="float32",
         center=True),
    dict(P=1, D=1, width=1, depth=1, activation="tanh", steps=0, seeds=2, center=True),
    dict(P=2, D=2, width=16, depth=2, activation="relu", optimizer="adam", steps=2, seeds=2),
    dict(P=2, D=2, width=8, depth=1, activation=jnp.sin, dynamics="flow", t_max=1.0, steps=2),
    dict(P=2, D=3, width=8, depth=1, parameterization="sp", alpha=1.0, steps=1, seeds=3,
         chunk_size=2, two_time_layers=(1, 2)),
]  # fmt: skip
SIM_ONLY_MUTATIONS = [
    ("width", 0),
    ("width", -4),
    ("width", 8.0),
    ("seeds", 0),
    ("seeds", 1.5),
    ("seed", -1),
    ("depth", INF),  # the limit belongs to solve_dmft
    ("optimizer", "rmsprop"),
    ("chunk_size", 0),
    ("two_time_layers", (0,)),
    ("two_time_layers", lambda kw: (kw["depth"] + 2,)),
]


@st.composite
def simulate_inputs(draw):
    preset = dict(draw(st.sampled_from(SIM_PRESETS)))
    P, D = preset.pop("P"), preset.pop("D")
    X, y = draw(data(P, D))
    kwargs = dict(X=X, y=y, **preset)
    kwargs.update(draw(physical()))
    _int_forms(draw, kwargs, ("width", "depth", "steps", "seeds", "chunk_size"))
    kwargs["seed"] = draw(st.integers(0, 2))
    kwargs["throw"] = draw(st.booleans())
    if preset.get("dynamics") != "flow":
        kwargs["batch_size"] = draw(batch_size(P))
    return _apply(kwargs, draw(st.none() | st.sampled_from(simulate_mutations(preset))))


def simulate_mutations(preset):
    """The known-bad values for a simulate preset."""
    pool = DATA_MUTATIONS + SHARED_MUTATIONS + SIM_ONLY_MUTATIONS
    if preset.get("optimizer") == "adam":
        pool = [m for m in pool if m[0] != "momentum"] + [("momentum", 0.9)]
    if preset.get("dynamics") == "flow":
        pool = [m for m in pool if m != ("t_max", 1.0)]
        pool += [m for m in FLOW_MUTATIONS if m[0] != "flow_order"]
        pool += [("substeps", 0), ("optimizer", "adam"), ("batch_size", 1), ("momentum", 0.5)]
    return pool


def _simulate(X, y, **kwargs):
    return dmft.simulate(X, y, **kwargs)


_simulate.__signature__ = inspect.signature(dmft.simulate)


@settings(max_examples=120, **PROFILE)
@given(simulate_inputs())
@example((dict(X=np.ones((1, 1)), y=np.ones(1), width=1, depth=1, steps=0, seeds=1), None))
def test_simulate_contract(case):
    kwargs, bad = case
    check_entry_point(_simulate, [(sim_module, "_run_chunk")], kwargs, bad=bad, prop="simulate")


@pytest.mark.parametrize("entry", ["solve_dmft", "simulate"])
def test_every_known_bad_value_is_refused_before_compiling(entry):
    """Every preset with every one of its known-bad values (the properties draw a few of
    them at random): refused by validation alone, naming the argument, and by the real call
    before anything is compiled."""
    fn, compiled, presets, mutations = {
        "solve_dmft": (_solve, [(solve_module, "_linear"), (solve_module, "_monte_carlo")],
                       SOLVE_PRESETS, solve_mutations),
        "simulate": (_simulate, [(sim_module, "_run_chunk")], SIM_PRESETS, simulate_mutations),
    }[entry]  # fmt: skip
    tried = 0
    for preset in presets:
        preset = dict(preset)
        P, D, Q = preset.pop("P"), preset.pop("D"), preset.pop("Q", 0)
        kwargs = dict(X=np.linspace(-1.0, 1.0, P * D).reshape(P, D), y=np.linspace(1, -1, P))
        if Q:
            kwargs.update(X_test=np.ones((Q, D)), y_test=np.ones(Q))
        kwargs.update(preset)
        for mutation in mutations(preset):
            bad_kwargs, bad = _apply(kwargs, mutation)
            assert refusal(fn, compiled, bad_kwargs, bad) is not None
            _record(f"{entry}, every known-bad value", bad_kwargs, "rejected")
            tried += 1
    assert tried > 300


# ---------------------------------------------------------------------------------------------
# lazy_kernels and lazy_errors (NumPy closed forms: nothing is compiled, no status to report,
# so a valid input must give finite numbers)

LAZY_MUTATIONS = [
    ("depth", 0),
    ("depth", -1),
    ("depth", 2.5),
    ("depth", INF),
    ("depth", True),
    ("beta0", -1.0),
    ("beta0", NAN),
    ("beta0", INF),
    ("beta0", np.ones(2)),
    ("beta0", 1e200),  # the kernels overflow float64
    ("alpha", 0.4),
    ("alpha", 1.1),
    ("alpha", NAN),
    ("activation", "gelu"),
    ("activation", 3),
    ("parameterization", "ntk"),
    ("X", lambda kw: _poison(kw["X"], NAN)),
    ("X", lambda kw: _poison(kw["X"], INF)),
    ("X", lambda kw: np.asarray(kw["X"])[:, 0]),
    ("X", lambda kw: np.zeros((2, 0))),
    ("X", lambda kw: np.zeros((0, 2))),
    ("X", lambda kw: np.asarray(kw["X"]).astype(str)),
    ("X", lambda kw: np.full((2, 2), 1e300)),  # the kernels overflow float64
]


@st.composite
def lazy_inputs(draw):
    P, D = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    X, _ = draw(data(P, D))
    kwargs = dict(
        X=X,
        depth=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(["linear", "relu", "tanh", jnp.sin])),
        beta0=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 1e3])),
        alpha=draw(st.sampled_from([0.5, 0.75, 1.0])),
        parameterization=draw(st.sampled_from(["depth-mup", "mup", "sp"])),
    )
    return _apply(kwargs, draw(st.none() | st.sampled_from(LAZY_MUTATIONS)))


def _lazy_kernels(X, **kwargs):
    return dmft.lazy_kernels(X, **kwargs)


_lazy_kernels.__signature__ = inspect.signature(dmft.lazy_kernels)


@settings(max_examples=200, **PROFILE)
@given(lazy_inputs())
@example((dict(X=np.zeros((1, 1)), depth=1), None))  # a zero input: H = 0 everywhere
@example((dict(X=np.ones((1, 1)), depth=1, beta0=1e200), "beta0"))  # was OverflowError
def test_lazy_kernels_contract(case):
    kwargs, bad = case
    try:
        result = _lazy_kernels(**kwargs)
    except (ValueError, TypeError) as err:
        assert_names_argument(err, _lazy_kernels, bad)
        _record("lazy_kernels", kwargs, "rejected")
        return
    assert bad is None, f"`{bad}` = {kwargs[bad]!r} was accepted"
    P, L = np.shape(kwargs["X"])[0], kwargs["depth"]
    for name in ("h_kernel", "phi_kernel", "g_kernel"):
        value = getattr(result, name)
        assert value.shape == (L + 1, P, P) and np.all(np.isfinite(value)), name
    assert result.ntk.shape == (P, P) and np.all(np.isfinite(result.ntk))
    assert_round_trips(result)
    _record("lazy_kernels", kwargs, "ok")


ERRORS_MUTATIONS = [
    ("eta0", -0.1),
    ("eta0", NAN),
    ("eta0", INF),
    ("eta0", "0.1"),
    ("steps", -1),
    ("steps", 2.5),
    ("steps", None),
    ("ntk", lambda kw: np.eye(len(kw["y"]) + 1)),
    ("ntk", lambda kw: np.ones(len(kw["y"]))),
    ("ntk", lambda kw: np.ones((len(kw["y"]), len(kw["y"]) + 1))),
    ("ntk", lambda kw: _poison(kw["ntk"], NAN)),
    ("y", lambda kw: np.ones(len(kw["y"]) + 1)),
    ("y", lambda kw: np.asarray(kw["y"])[:, None]),
    ("y", lambda kw: _poison(kw["y"], INF)),
    ("batch_masks", lambda kw: np.ones((kw["steps"] + 1, len(kw["y"])))),
    ("batch_masks", lambda kw: np.ones((kw["steps"], len(kw["y"]) + 1))),
    ("batch_masks", lambda kw: np.zeros((kw["steps"], len(kw["y"])))),
    ("batch_masks", lambda kw: np.full((kw["steps"], len(kw["y"])), 0.5)),
    ("batch_masks", lambda kw: np.full((kw["steps"], len(kw["y"])), NAN)),
]


@st.composite
def errors_inputs(draw):
    P = draw(st.integers(1, 4))
    A = np.array(draw(st.lists(st.sampled_from(VALUES), min_size=P * P, max_size=P * P)))
    A = A.reshape(P, P)
    ntk = draw(st.sampled_from([A, A + A.T, A @ A.T]))  # any, symmetric, or PSD
    y = np.array(draw(st.lists(st.sampled_from(VALUES), min_size=P, max_size=P)))
    steps = draw(st.integers(0, 4))
    kwargs = dict(ntk=ntk, y=y, eta0=draw(st.sampled_from([0.0, 1e-12, 0.05, 1.0, 1e6])))
    kwargs["steps"] = steps
    batch = draw(st.none() | st.integers(1, P))
    if batch is not None:
        kwargs["batch_masks"] = dmft.batch_schedule(P, batch, steps, draw(st.integers(0, 2)))
    return _apply(kwargs, draw(st.none() | st.sampled_from(ERRORS_MUTATIONS)))


@settings(max_examples=300, **PROFILE)
@given(errors_inputs())
@example((dict(ntk=np.eye(2), y=np.ones(2), eta0=0.1, steps=0), None))
def test_lazy_errors_contract(case):
    kwargs, bad = case
    try:
        delta = dmft.lazy_errors(**kwargs)
    except (ValueError, TypeError) as err:
        assert_names_argument(err, dmft.lazy_errors, bad)
        _record("lazy_errors", kwargs, "rejected")
        return
    assert bad is None, f"`{bad}` = {kwargs[bad]!r} was accepted"
    # with entries up to 1e3 squared, η₀ <= 1e6 and at most 4 steps, nothing can overflow
    assert delta.shape == (kwargs["steps"] + 1, len(kwargs["y"]))
    assert np.all(np.isfinite(delta))
    np.testing.assert_array_equal(delta[0], kwargs["y"])
    _record("lazy_errors", kwargs, "ok")


# ---------------------------------------------------------------------------------------------
# load: a damaged file raises ValueError or loads the very same result, never other numbers


class _Files(dict):
    def __repr__(self):  # hypothesis prints the fixture with a failing example
        return f"<saved files {sorted(self)}>"


@pytest.fixture(scope="module")
def saved_files():
    results = {
        "lazy": dmft.lazy_kernels(np.eye(2, 3), depth=1, activation="relu"),
        "solution": dmft.solve_dmft(np.ones((1, 1)), np.ones(1), depth=1, activation="linear",
                                    steps=1),
    }  # fmt: skip
    folder = tempfile.mkdtemp()
    blobs = _Files()
    for name, result in results.items():
        path = os.path.join(folder, f"{name}.npz")
        dmft.save(result, path)
        with open(path, "rb") as fh:
            blobs[name] = (result, fh.read())
    yield folder, blobs
    shutil.rmtree(folder, ignore_errors=True)


@st.composite
def damage(draw):
    """(file, kind, where, xor): flip a byte anywhere, flip one in the zip's last central
    directory entry (46 bytes of header fields), cut the file short, or change a character of
    the metadata's tree and write a well-formed file around it (as a careless repair would)."""
    kind = draw(st.sampled_from(["flip", "central", "cut", "tree"]))
    where = draw(st.floats(0.0, 1.0, exclude_max=True))  # relative position
    xor = draw(st.sampled_from([0x01, 0x80, 0xFF]) | st.integers(1, 255))
    return draw(st.sampled_from(["lazy", "solution"])), kind, where, xor


def _change_tree(path, where, xor):
    """Change one character of the JSON tree in the metadata; rewrite a well-formed .npz."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    text = str(arrays.pop("__dmft__"))
    start, stop = text.index('"tree": '), text.index(', "digest": ')
    pos = start + int(where * (stop - start))
    text = text[:pos] + chr(ord(text[pos]) ^ (xor & 0x0F or 1)) + text[pos + 1 :]
    np.savez(path, **arrays, __dmft__=np.asarray(text))


@settings(max_examples=300, **PROFILE)
@given(damage())
@example(("lazy", "central", 6 / 46, 0xFF))  # "version needed": NotImplementedError
@example(("lazy", "central", 8 / 46, 0x01))  # the "encrypted" flag: RuntimeError
@example(("solution", "tree", 0.6533, 0x01))  # method "linear-exact" → "lhnear-exact"
def test_damaged_file_raises_or_loads_the_same(saved_files, case):
    folder, blobs = saved_files
    name, kind, where, xor = case
    result, blob = blobs[name]
    raw = bytearray(blob)
    if kind == "cut":
        raw = raw[: int(where * len(raw))]
    elif kind != "tree":
        start, size = (blob.rindex(b"PK\x01\x02"), 46) if kind == "central" else (0, len(blob))
        raw[start + int(where * size)] ^= xor
    path = os.path.join(folder, "damaged.npz")
    with open(path, "wb") as fh:
        fh.write(bytes(raw))
    if kind == "tree":
        _change_tree(path, where, xor)
    try:
        back = dmft.load(path)
    except ValueError as err:
        assert str(path) in str(err)
        _record("load of a damaged file", case, "ValueError")
        return
    assert_same(result, back)
    _record("load of a damaged file", case, "loaded the same")


def test_zip_headers_that_zipfile_refuses_are_reported_as_damage(tmp_path):
    """Regression: a flipped bit in the zip directory made ``load`` raise zipfile's own
    NotImplementedError ("zip file version …", "compression method") or RuntimeError ("is
    encrypted") instead of the documented ValueError."""
    lazy = dmft.lazy_kernels(np.eye(2), depth=1, activation="linear")
    lazy.save(tmp_path / "good.npz")
    blob = (tmp_path / "good.npz").read_bytes()
    central = blob.rindex(b"PK\x01\x02")  # the last central directory entry
    for offset, xor in ((6, 0xFF), (8, 0x01), (10, 0x01)):  # version needed, flags, method
        raw = bytearray(blob)
        raw[central + offset] ^= xor
        (tmp_path / "bad.npz").write_bytes(bytes(raw))
        with pytest.raises(ValueError, match="corrupted"):
            dmft.load(tmp_path / "bad.npz")
    assert zipfile.is_zipfile(tmp_path / "good.npz")


def test_an_altered_metadata_tree_is_refused_and_old_files_still_load(tmp_path):
    """Regression: the digest covered the arrays only, so a file whose metadata was altered
    (and its zip CRC repaired) loaded other settings, method or status silently."""
    sol = dmft.solve_dmft(np.ones((1, 1)), np.ones(1), depth=1, activation="linear", steps=1)
    path = tmp_path / "s.npz"
    sol.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__dmft__")))
    meta["tree"]["fields"]["method"] = "monte-carlo"
    np.savez(path, **arrays, __dmft__=np.asarray(json.dumps(meta)))
    with pytest.raises(ValueError, match="metadata does not match the digest"):
        dmft.load(path)
    del meta["tree_digest"]  # a file written before the tree had a digest: read as it is
    meta["tree"]["fields"]["method"] = sol.method
    np.savez(path, **arrays, __dmft__=np.asarray(json.dumps(meta)))
    assert_same(sol, dmft.load(path))


# ---------------------------------------------------------------------------------------------
# Regression tests for what the properties (and the probes that preceded them) found.


def test_simulate_reports_an_ntk_that_overflows_while_the_loss_stays_finite():
    """Was status "ok" with an infinite NTK: centred float32 networks whose kernels overflow
    (β₀ = 1e10) have f − f₀ = 0, so a finite loss, and with η₀ = 0 they never move."""
    kw = dict(width=4, depth=2, activation="linear", steps=3, momentum=0.9, dtype="float32",
              center=True, eta0=0.0, beta0=1e10)  # fmt: skip
    X, y = np.array([[1.0], [0.5], [-1.0]]), np.array([1.0, -1.0, 0.5])
    res = dmft.simulate(X, y, throw=False, **kw)
    assert np.all(np.isfinite(res.loss)) and not np.all(np.isfinite(res.ntk))
    assert res.diverged and int(res.diverged_step[0]) == 0
    assert res.status.startswith("diverged") and "at initialisation" in res.status
    assert "`beta0`" in res.status and "float32" in res.status
    with pytest.raises(dmft.DivergenceError, match="at initialisation") as info:
        dmft.simulate(X, y, **kw)
    assert info.value.step == 0


def test_a_diverging_flow_of_networks_suggests_substeps_not_eta0():
    """Was "lower `eta0` (now None)": a flow has no η₀; its step is t_max/(steps·substeps)."""
    X, y = np.array([[1.0, 0.5], [-0.3, 1.2]]), np.array([1.0, -1.0])
    res = dmft.simulate(X, y, width=8, depth=1, activation="linear", dynamics="flow", t_max=100.0,
                        steps=2, throw=False)  # fmt: skip
    assert res.diverged and int(res.diverged_step[0]) > 0
    assert "`substeps`" in res.status and "eta0" not in res.status


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(depth=0), ValueError, "`depth` must be an int >= 1"),  # was ZeroDivisionError
        (dict(depth=-1), ValueError, "`depth` must be an int >= 1"),  # was a TypeError on complex
        (dict(depth=2.5), TypeError, "`depth` must be an int"),
        (dict(beta0=NAN), ValueError, "`beta0` must be finite"),  # was NaN kernels
        (dict(beta0=-1.0), ValueError, "`beta0` must be in"),
        (dict(alpha=0.3), ValueError, "`alpha` must be in"),
        (dict(X=np.ones(3)), ValueError, "`X` must be a 2-d array"),  # was IndexError
        (dict(X=np.ones((2, 0))), ValueError, "`X` must have at least one point"),  # was NaN
        (dict(X=np.zeros((0, 2))), ValueError, "`X` must have at least one point"),
        (dict(X=np.array([[NAN, 1.0]])), ValueError, "`X` contains NaN"),  # was NaN kernels
        (dict(beta0=1e200), ValueError, "overflow float64: `X`"),  # was inf/NaN kernels
    ],
)
def test_lazy_kernels_validates_its_arguments(kw, err, match):
    kw = {"X": np.eye(2, 3), "depth": 2, **kw}
    with pytest.raises(err, match=match):
        dmft.lazy_kernels(kw.pop("X"), **kw)


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(steps=-1), ValueError, "`steps` must be an int >= 0"),  # was Δ(0) alone
        (dict(steps=2.5), TypeError, "`steps` must be an int"),
        (dict(eta0=NAN), ValueError, "`eta0` must be finite"),  # was NaN errors
        (dict(eta0=-0.5), ValueError, "`eta0` must be in"),
        (dict(ntk=np.eye(3)), ValueError, r"`ntk` must have shape \(2, 2\)"),  # was numpy's
        (dict(ntk=np.full((2, 2), NAN)), ValueError, "`ntk` contains NaN"),
        (dict(y=np.ones((2, 1))), ValueError, "`y` must have shape"),
        (dict(batch_masks=np.ones((2, 2))), ValueError, r"`batch_masks` must have shape \(3, 2\)"),
        (dict(batch_masks=np.zeros((3, 2))), ValueError, "at least one 1 per step"),  # was NaN
    ],
)
def test_lazy_errors_validates_its_arguments(kw, err, match):
    kw = {"ntk": np.eye(2), "y": np.ones(2), "eta0": 0.1, "steps": 3, **kw}
    with pytest.raises(err, match=match):
        dmft.lazy_errors(**kw)


@pytest.mark.parametrize("fn", [dmft.solve_dmft, dmft.simulate])
def test_an_unknown_dtype_names_the_argument_before_compiling(fn):
    """Was numpy's own "data type 'nonsense' not understood"."""
    kw = dict(depth=1, steps=1, dtype="nonsense", **({"width": 4} if fn is dmft.simulate else {}))
    with checking_only(), pytest.raises(TypeError, match="`dtype` must be float32 or float64"):
        fn(np.ones((1, 1)), np.ones(1), **kw)


def test_every_known_bad_value_of_the_closed_forms_is_refused():
    """As above for lazy_kernels and lazy_errors (which compile nothing)."""
    base = dict(X=np.array([[1.0, 0.5], [-0.3, 1.2]]), depth=2)
    for mutation in LAZY_MUTATIONS:
        kwargs, bad = _apply(base, mutation)
        with pytest.raises((ValueError, TypeError)) as info:
            _lazy_kernels(**kwargs)
        assert_names_argument(info.value, _lazy_kernels, bad)
    base = dict(ntk=np.array([[2.0, 0.5], [0.5, 1.0]]), y=np.array([1.0, -1.0]), eta0=0.1, steps=3)
    for mutation in ERRORS_MUTATIONS:
        kwargs, bad = _apply(base, mutation)
        with pytest.raises((ValueError, TypeError)) as info:
            dmft.lazy_errors(**kwargs)
        assert_names_argument(info.value, dmft.lazy_errors, bad)
