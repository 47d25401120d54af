"""Acceptance: learning-rate transfer in miniature (simulated networks)."""

import numpy as np

from dmft.transfer import hyperparameter_sweep

ETAS = 2.0 ** np.arange(-6, 3)


def _sweep(parameterization):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(8, 5)), np.sign(rng.normal(size=8))
    return hyperparameter_sweep(
        X,
        y,
        values=ETAS,
        widths=(64, 256),
        depths=(2, 32),
        steps=10,
        seeds=4,
        parameterization=parameterization,
        beta0=0.5,
        center=True,
        activation="relu",
    )


def test_optimal_eta0_transfers_in_depth_mup():
    best = _sweep("depth-mup").best_index()
    assert best.max() - best.min() <= 1, best
    assert 0 < best.min() and best.max() < len(ETAS) - 1  # an interior optimum


def test_optimal_eta0_moves_with_depth_in_mup():
    sw = _sweep("mup")
    best = sw.best_index()
    assert np.all(best[:, 0] - best[:, 1] >= 3), best  # deeper μP nets need a much smaller η₀
    assert np.isinf(sw.loss[:, 1, -1]).all()  # and diverge where depth-μP is fine
