"""Progress bars for long solves and simulations.

``progress=None`` (the default everywhere) shows a bar only when standard error is a terminal
and the ``CI`` environment variable is unset, so notebooks, pipes and CI stay quiet unless a
caller passes ``progress=True``. Compiled loops report each finished time step to the host with
``jax.debug.callback``; the bar shows steps done, the rate, the time left, and the residual
the caller attaches (for a Monte Carlo solve, the relative standard error of the loss).
Progress is off inside ``jit``/``vmap`` (the callbacks would fire once per batch element).
"""

from __future__ import annotations

import contextlib
import os
import sys

import jax
from tqdm import tqdm

from dmft.settings import is_traced

_BARS: list = []  # the bars now open, innermost last; callbacks advance the innermost


def enabled(progress, *values) -> bool:
    """Whether to show a bar: ``progress`` if given, else whether stderr is a terminal outside
    CI. Never inside ``jit``/``vmap`` (any of ``values`` traced).

    Raises:
        TypeError: ``progress`` is not None or a bool.
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be None, True or False, got {progress!r}")
    if any(is_traced(v) for v in values):
        return False
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)()) and not os.environ.get("CI")
    return progress


def _advance(*_):
    if _BARS:
        b = _BARS[-1]
        if b.n == 0 and not b.disable:
            b.set_postfix_str("", refresh=False)  # compiled: drop the "compiling" note
        b.update(1)


def advance(n: int) -> None:
    """On the host: advance the open bar by ``n`` steps (work loaded instead of run)."""
    if _BARS:
        _BARS[-1].update(n)


def tick(step) -> None:
    """Inside a compiled loop: advance the open bar by one when this step has run."""
    jax.debug.callback(_advance, step)


@contextlib.contextmanager
def bar(total: int, desc: str, show: bool):
    """Open a bar of ``total`` steps that ``tick`` advances; yields it (a no-op if hidden)."""
    b = tqdm(total=total, desc=desc, disable=not show, dynamic_ncols=True, leave=False)
    if show:
        b.set_postfix_str("compiling")
    _BARS.append(b)
    try:
        yield b
    finally:
        jax.effects_barrier()  # let the last callbacks land before the bar closes
        _BARS.remove(b)
        b.close()
