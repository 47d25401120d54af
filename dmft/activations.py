"""Activation functions φ and their derivatives φ' (SPEC §1).

An activation is named ("linear", "relu", "tanh") or given as any elementwise JAX-traceable
callable, whose derivative is then taken by forward-mode autodiff.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

NAMES = ("linear", "relu", "tanh")


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity φ with its derivative φ'.

    Attributes:
        name: "linear", "relu", "tanh", or the callable's ``__name__``.
        fn: φ, elementwise.
        deriv: φ', elementwise (for ReLU the Heaviside step, with φ'(0) = 0).
    """

    name: str
    fn: Callable
    deriv: Callable

    @property
    def is_linear(self) -> bool:
        return self.name == "linear"


def _identity(x):
    return x


def _ones(x):
    return jnp.ones_like(x)


def _relu_deriv(x):
    return (x > 0).astype(x.dtype)


def _tanh_deriv(x):
    return 1.0 - jnp.tanh(x) ** 2


_BUILTIN = {
    "linear": Activation("linear", _identity, _ones),
    "relu": Activation("relu", jax.nn.relu, _relu_deriv),
    "tanh": Activation("tanh", jnp.tanh, _tanh_deriv),
}


def _callable_deriv(fn):
    def deriv(x):
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return deriv


def get_activation(activation) -> Activation:
    """Return the :class:`Activation` for a name or an elementwise callable.

    Raises:
        ValueError: for an unknown name, or an object that is neither a name nor callable.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in _BUILTIN:
            raise ValueError(
                f"`activation` must be one of {NAMES} or an elementwise callable, "
                f"got {activation!r}"
            )
        return _BUILTIN[activation]
    if callable(activation):
        name = getattr(activation, "__name__", "custom")
        return Activation(name, activation, _callable_deriv(activation))
    raise ValueError(
        f"`activation` must be one of {NAMES} or an elementwise callable, got {activation!r}"
    )
