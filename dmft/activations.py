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
    """An elementwise nonlinearity φ with its derivative φ' (SPEC §1).

    φ acts on the pre-activations, ``hˡ⁺¹ = hˡ + (β₀/L^α) Wˡ φ(hˡ)/√N``; φ' enters the backward
    fields ``gˡ = gˡ⁺¹ + (β₀/L^α) φ'(hˡ) ⊙ Wˡᵀgˡ⁺¹/√N`` (SPEC §2). Obtain one with
    ``get_activation``.

    Attributes:
        name: "linear", "relu", "tanh", or the callable's ``__name__``.
        fn: φ, elementwise: an array of any shape to one of the same shape.
        deriv: φ', elementwise (for ReLU the Heaviside step, with φ'(0) = 0).

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> act = dmft.get_activation("tanh")
        >>> act.name, act.is_linear
        ('tanh', False)
        >>> act.fn(np.zeros((2, 3))).shape
        (2, 3)
        >>> float(act.deriv(0.0))  # 1 − tanh(0)²
        1.0
    """

    name: str
    fn: Callable
    deriv: Callable

    @property
    def is_linear(self) -> bool:
        """True for the built-in "linear" activation (or any whose ``name`` is "linear")."""
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
    """Return the ``Activation`` for a name or an elementwise callable.

    The built-in names are "linear" (φ(x) = x, φ' = 1), "relu" (φ(x) = max(x, 0), φ' the
    Heaviside step with φ'(0) = 0) and "tanh" (φ' = 1 − tanh²). For a callable, φ' is taken by
    forward-mode autodiff, ``φ'(x) = jvp(φ, x, 1)``, which is exact for an elementwise φ.

    Args:
        activation: one of "linear", "relu", "tanh"; an elementwise JAX-traceable callable
            (array of any shape to one of the same shape); or an ``Activation``, returned
            unchanged.

    Returns:
        ``Activation`` whose ``name`` is the given name, or the callable's ``__name__``
        ("custom" if it has none; "custom relu" for a callable named like a built-in, so that
        it is never given the built-in's closed forms or the exact linear path).

    Raises:
        ValueError: for an unknown name, or an object that is neither a name nor callable.

    Examples:
        >>> import numpy as np
        >>> import jax.numpy as jnp
        >>> import dmft
        >>> relu = dmft.get_activation("relu")
        >>> np.asarray(relu.deriv(np.array([-1.0, 0.0, 2.0]))).tolist()
        [0.0, 0.0, 1.0]
        >>> sine = dmft.get_activation(jnp.sin)  # φ' = cos by autodiff
        >>> sine.name, float(sine.deriv(0.0))
        ('sin', 1.0)
        >>> dmft.get_activation("gelu")
        Traceback (most recent call last):
            ...
        ValueError: `activation` must be one of ('linear', 'relu', 'tanh') ... got 'gelu'
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
        if name in _BUILTIN:  # a callable is never taken for a built-in (its closed forms)
            name = f"custom {name}"
        return Activation(name, activation, _callable_deriv(activation))
    raise ValueError(
        f"`activation` must be one of {NAMES} or an elementwise callable, got {activation!r}"
    )
