"""Exceptions raised for numerical failure (bad input raises ValueError/TypeError)."""

from __future__ import annotations


class DivergenceError(FloatingPointError):
    """A trajectory became non-finite. ``step`` is the first bad step.

    Raised, when ``throw=True`` (the default), by ``dmft.simulate`` if the training loss (or
    the NTK) of any network of the ensemble becomes NaN or ±inf, and by ``dmft.solve_dmft`` if
    the DMFT loss (or NTK) does. Gradient descent on a kernel K is stable only for
    ``η₀ λ_max(K)/P < 2`` (SPEC §6, ``Δ(t) = (I − η₀K/P)ᵗ y`` in the lazy limit), so a
    too-large ``eta0`` is the usual cause.
    With ``throw=False`` the result's ``status`` and ``diverged_step`` report it instead.

    Args:
        message: what diverged and what to try.
        step: the first time index t (``loss[..., t]``, after t updates) whose loss or NTK is
            not finite, the earliest over the seeds of an ensemble; None if unknown.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> try:
        ...     dmft.simulate(X, y, width=16, depth=2, activation="linear", eta0=1e3, steps=3,
        ...                   seeds=4, center=True)
        ... except dmft.DivergenceError as err:
        ...     print(1 <= err.step <= 3, str(err).startswith("diverged"))
        True True
        >>> issubclass(dmft.DivergenceError, FloatingPointError)
        True
    """

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step


class ConvergenceError(RuntimeError):
    """A solve stopped short of its accuracy target.

    Raised by ``dmft.solve_dmft`` with ``throw=True`` (the default) when a Monte Carlo solve
    misses ``tol``: the largest relative standard error of the loss over its replicas,
    ``max_t loss_error(t)/loss(t)``, exceeds ``tol``. The march is causal and not iterated, so
    ``iterations`` is 1 there and ``residual`` is that relative error. With ``throw=False`` the
    solution's ``converged``, ``residuals`` and ``status`` report it instead.

    Args:
        message: what missed its target and what to try (more ``samples`` or ``replicas``).
        iterations: passes made over the trajectory, or None.
        residual: the error measure that exceeded the tolerance, or None.

    Examples:
        >>> import dmft
        >>> try:
        ...     raise dmft.ConvergenceError("not converged", iterations=1, residual=0.08)
        ... except RuntimeError as err:
        ...     print(type(err).__name__, err.iterations, err.residual)
        ConvergenceError 1 0.08
    """

    def __init__(
        self, message: str, *, iterations: int | None = None, residual: float | None = None
    ):
        super().__init__(message)
        self.iterations = iterations
        self.residual = residual
