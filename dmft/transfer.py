"""Hyperparameter sweeps of finite networks: the learning-rate-transfer picture.

In depth-μP the loss after a fixed budget, as a function of η₀, converges as N, L → ∞, so the
best η₀ found on a small network transfers to a large one. :func:`hyperparameter_sweep` measures
that curve for a grid of widths and depths; :func:`best_value` reads off the optimum.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmft.simulate import simulate


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Loss after the budget for every (width, depth, value).

    Attributes:
        name: the swept keyword ("eta0", "gamma0", ...).
        values: (V,) the grid.
        widths, depths: the network sizes.
        loss: (len(widths), len(depths), V) ensemble-mean final loss; ``inf`` where any seed
            diverged.
        stderr: same shape, standard error over seeds.
        field: "loss" or "test_loss".
        settings: the other keyword arguments.
    """

    name: str
    values: np.ndarray
    widths: tuple
    depths: tuple
    loss: np.ndarray
    stderr: np.ndarray
    field: str
    settings: dict

    def best_index(self) -> np.ndarray:
        """(len(widths), len(depths)) index of the value with the lowest loss."""
        return np.argmin(self.loss, axis=-1)

    def best_value(self) -> np.ndarray:
        return np.asarray(self.values)[self.best_index()]


def hyperparameter_sweep(
    X,
    y,
    *,
    name: str = "eta0",
    values,
    widths,
    depths,
    steps: int,
    seeds: int = 4,
    field: str = "loss",
    progress: bool = False,
    **kwargs,
) -> Sweep:
    """Final loss of simulated networks over a grid of one hyperparameter, widths and depths.

    The swept value is passed as a traced scalar, so each (width, depth) compiles once.

    Example:
        >>> import numpy as np
        >>> sw = hyperparameter_sweep(np.eye(2), np.array([1.0, -1.0]), values=[0.1, 1.0],
        ...                           widths=(16,), depths=(2,), steps=3, seeds=1)
        >>> sw.loss.shape
        (1, 1, 2)
    """
    values = np.asarray(values, dtype=float)
    loss = np.full((len(widths), len(depths), len(values)), np.inf)
    se = np.zeros_like(loss)
    for i, n in enumerate(widths):
        for j, L in enumerate(depths):
            for k, v in enumerate(values):
                res = simulate(
                    X,
                    y,
                    width=n,
                    depth=L,
                    steps=steps,
                    seeds=seeds,
                    throw=False,
                    progress=progress,
                    **{name: float(v)},
                    **kwargs,
                )
                final = np.asarray(getattr(res, field))[:, -1]
                if np.all(np.isfinite(final)):
                    loss[i, j, k] = final.mean()
                    se[i, j, k] = final.std(ddof=1) / np.sqrt(seeds) if seeds > 1 else 0.0
    return Sweep(
        name,
        values,
        tuple(widths),
        tuple(depths),
        loss,
        se,
        field,
        dict(steps=steps, seeds=seeds, **kwargs),
    )
