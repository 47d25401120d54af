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


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop every compiled program after each test module.

    Each XLA:CPU executable keeps about ten memory mappings, and a full run compiles thousands
    of programs (the property tests alone add 12 000 mappings). Past the kernel's limit on
    mappings per process (vm.max_map_count, 65 530 by default) the next compilation's mmap
    fails and LLVM crashes the interpreter (a segmentation fault in `backend_compile_and_load`,
    seen near the end of the suite). No test relies on a program compiled by another module.
    """
    yield
    jax.clear_caches()
