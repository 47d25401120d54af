"""Tests run in float64 unless they ask for float32 explicitly."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def data():
    """Eight random points in D = 5 with unit-norm inputs and ±1-ish targets."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 5))
    X *= np.sqrt(5) / np.linalg.norm(X, axis=1, keepdims=True)
    y = np.sign(rng.normal(size=8)) * (0.5 + rng.random(8))
    return X, y
