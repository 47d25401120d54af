"""Validation of user input, shared by every public entry point.

Every check runs on concrete Python/NumPy values before anything is traced or compiled, and
raises a ``ValueError`` (or ``TypeError``) naming the argument, its value and the valid range.
Physical parameters that arrive as JAX tracers (under ``jax.vmap``) are passed through unchecked.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from dmft.activations import get_activation
from dmft.parameterization import PARAMETERIZATIONS

OPTIMIZERS = ("gd", "sgd", "adam")


def check_int(name: str, value, *, minimum: int, allow_inf: bool = False):
    """Return ``value`` as a Python int >= ``minimum`` (or ``math.inf`` when allowed)."""
    if allow_inf and isinstance(value, float) and value == math.inf:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        extra = " or math.inf" if allow_inf else ""
        raise TypeError(f"`{name}` must be an int >= {minimum}{extra}, got {value!r}")
    if value < minimum:
        extra = " or math.inf" if allow_inf else ""
        raise ValueError(f"`{name}` must be an int >= {minimum}{extra}, got {value!r}")
    return int(value)


try:  # public in the JAX versions we support; the private home is the fallback
    _Tracer = jax.core.Tracer
except AttributeError:  # pragma: no cover
    from jax._src.core import Tracer as _Tracer


_CHECK_ONLY = contextvars.ContextVar("dmft_check_only", default=False)


@contextlib.contextmanager
def checking_only():
    """Within this context, ``simulate`` and ``solve_dmft`` validate their arguments and return
    None without compiling or computing anything (used to check a whole sweep up front)."""
    token = _CHECK_ONLY.set(True)
    try:
        yield
    finally:
        _CHECK_ONLY.reset(token)


def check_only() -> bool:
    """True inside ``checking_only``."""
    return _CHECK_ONLY.get()


def is_traced(value) -> bool:
    """True for a JAX tracer (a value seen inside jit or vmap), False for concrete values."""
    return isinstance(value, _Tracer)


def check_scalar(name: str, value, *, low=None, high=None, low_open=False, high_open=False):
    """Check a real scalar against a range; tracers pass unchecked. Returns the value."""
    if is_traced(value):
        return value
    try:
        arr = np.asarray(value)
    except Exception as err:  # pragma: no cover - exotic objects
        raise TypeError(f"`{name}` must be a real number, got {value!r}") from err
    if arr.dtype.kind not in "biuf" or arr.dtype == bool:
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    if arr.ndim != 0:
        raise ValueError(
            f"`{name}` must be a scalar, got shape {arr.shape}; use jax.vmap to sweep values"
        )
    x = float(arr)
    rng = (
        f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
        f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}"
    )
    if not math.isfinite(x):
        raise ValueError(f"`{name}` must be finite and in {rng}, got {value!r}")
    if low is not None and (x < low or (low_open and x == low)):
        raise ValueError(f"`{name}` must be in {rng}, got {value!r}")
    if high is not None and (x > high or (high_open and x == high)):
        raise ValueError(f"`{name}` must be in {rng}, got {value!r}")
    return value


def check_inputs(X, *, name="X"):
    """Check a (P, D) input matrix on its own (P, D >= 1, real, finite); return it as NumPy."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-d array (points, dim), got shape {X.shape}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"`{name}` must have at least one point and one dim, got {X.shape}")
    if X.dtype.kind not in "biuf" or X.dtype == bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"`{name}` contains NaN or inf; every entry must be finite")
    return X


def check_data(X, y, *, x_name="X", y_name="y", dim=None):
    """Check a (P, D) input matrix and its (P,) targets; return them as NumPy arrays."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"`{x_name}` must be a 2-d array (points, dim), got shape {X.shape}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"`{x_name}` must have at least one point and one dim, got {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"`{y_name}` must have shape ({X.shape[0]},) to match `{x_name}` {X.shape}, "
            f"got {y.shape}"
        )
    if dim is not None and X.shape[1] != dim:
        raise ValueError(
            f"`{x_name}` must have {dim} columns like the training inputs, got {X.shape}"
        )
    for name, arr in ((x_name, X), (y_name, y)):
        if arr.dtype.kind not in "biuf" or arr.dtype == bool:
            raise TypeError(f"`{name}` must hold real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` contains NaN or inf; every entry must be finite")
    return X, y


def check_common(
    *,
    depth,
    activation,
    beta0,
    gamma0,
    eta0,
    alpha,
    parameterization="depth-mup",
    momentum=0.0,
    batch_size=None,
    n_points,
    steps,
    allow_inf_depth=False,
):
    """Checks shared by ``simulate`` and ``solve_dmft``; returns the normalised values."""
    depth = check_int("depth", depth, minimum=1, allow_inf=allow_inf_depth)
    steps = check_int("steps", steps, minimum=0)
    act = get_activation(activation)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
        )
    check_scalar("beta0", beta0, low=0.0)
    check_scalar("gamma0", gamma0, low=0.0, low_open=True)
    check_scalar("eta0", eta0, low=0.0)
    check_scalar("alpha", alpha, low=0.5, high=1.0)
    if is_traced(alpha):
        raise TypeError("`alpha` must be a Python float in [0.5, 1] (it fixes the depth scaling)")
    check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    if is_traced(momentum):
        raise TypeError("`momentum` must be a Python float in [0, 1)")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if batch_size > n_points:
            raise ValueError(
                f"`batch_size` must be in [1, {n_points}] (the number of training points) "
                f"or None for full batch, got {batch_size}"
            )
    return dict(depth=depth, steps=steps, activation=act, batch_size=batch_size)


def check_flow(*, t_max, steps, batch_size, momentum):
    """Checks of the gradient-flow arguments shared by ``simulate`` and ``solve_dmft``."""
    if t_max is None:
        raise ValueError("dynamics='flow' needs `t_max` > 0, the final time τ of the flow")
    check_scalar("t_max", t_max, low=0.0, low_open=True)
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1 for dynamics='flow' (grid intervals), got {steps}")
    if batch_size is not None:
        raise ValueError(
            "`batch_size` must be None for dynamics='flow' (gradient flow is full-batch)"
        )
    if momentum != 0:
        raise ValueError("`momentum` must be 0 for dynamics='flow'")


def check_depth_ladder(depths):
    """The ladder of depths for ``depth=math.inf``, as a tuple of ints."""
    try:
        ladder = tuple(depths)
    except TypeError:
        raise TypeError(f"`depths` must be a sequence of ints, got {depths!r}") from None
    ladder = tuple(check_int("depths", d, minimum=1) for d in ladder)
    if len(ladder) < 2 or any(b <= a for a, b in zip(ladder, ladder[1:], strict=False)):
        raise ValueError(f"`depths` must hold at least two increasing depths, got {ladder}")
    if any(d % ladder[0] for d in ladder):
        raise ValueError(
            f"every entry of `depths` must be a multiple of the first ({ladder[0]}), so the "
            f"layers line up in τ = ℓ/L; got {ladder}"
        )
    return ladder


def resolve_dtype(dtype):
    """Return the floating dtype to compute in, checking that float64 is enabled if asked."""
    if dtype is None:
        return jnp.zeros(()).dtype  # float64 iff jax_enable_x64
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"`dtype` must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"`dtype` must be float32 or float64, got {dtype!r}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "`dtype`=float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "at start-up"
        )
    return dt
