"""Exceptions raised for numerical failure (bad input raises ValueError/TypeError)."""

from __future__ import annotations


class DivergenceError(FloatingPointError):
    """A trajectory became non-finite. ``step`` is the first bad step."""

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step


class ConvergenceError(RuntimeError):
    """A fixed-point solve stopped before reaching its tolerance."""

    def __init__(
        self, message: str, *, iterations: int | None = None, residual: float | None = None
    ):
        super().__init__(message)
        self.iterations = iterations
        self.residual = residual
