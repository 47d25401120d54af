"""Hyperparameter sweeps of finite networks: the learning-rate-transfer picture.

In depth-μP the loss after a fixed budget, as a function of η₀, converges as N, L → ∞, so the
best η₀ found on a small network transfers to a large one. ``hyperparameter_sweep`` measures
that curve for a grid of widths and depths; ``Sweep.best_value`` reads off the optimum.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmft.cache import Cache, array_digest, code_version, make_key
from dmft.io import Saveable
from dmft.simulate import simulate


@dataclasses.dataclass(frozen=True)
class Sweep(Saveable):
    """Loss after the budget for every (width, depth, value).

    Attributes:
        name: the swept keyword ("eta0", "gamma0", ...).
        values: (V,) the grid.
        widths: the network widths.
        depths: the network depths.
        loss: (len(widths), len(depths), V) ensemble-mean final loss; ``inf`` where any seed
            diverged.
        stderr: same shape, standard error over seeds.
        field: "loss" or "test_loss".
        settings: the other keyword arguments.

    Returned by ``hyperparameter_sweep``.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> sweep = dmft.hyperparameter_sweep(X, y, values=[0.05, 0.5, 1e3], widths=(16,),
        ...     depths=(2,), steps=3, seeds=4, activation="linear", center=True)
        >>> sweep.loss.shape, sweep.stderr.shape  # (widths, depths, values)
        ((1, 1, 3), (1, 1, 3))
        >>> sweep.best_index().tolist()
        [[1]]
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

    @property
    def status(self) -> str:
        """ "ok", or which (width, depth, value) points diverged (their loss is ``inf``)."""
        bad = np.argwhere(~np.isfinite(np.asarray(self.loss)))
        if bad.size == 0:
            return "ok"
        points = [
            (self.widths[i], self.depths[j], float(np.asarray(self.values)[k])) for i, j, k in bad
        ]
        return (
            f"diverged at {len(points)} of {np.size(self.loss)} points (width, depth, "
            f"{self.name}): {points[:5]}{' …' if len(points) > 5 else ''}; their loss is inf"
        )

    def best_value(self) -> np.ndarray:
        """(len(widths), len(depths)) the value with the lowest loss."""
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
    cache_dir=None,
    **kwargs,
) -> Sweep:
    """Final loss of simulated networks over a grid of one hyperparameter, widths and depths.

    For every (N, L, value) it trains ``seeds`` networks with ``dmft.simulate`` and records
    the ensemble mean of ``field`` after ``steps`` updates, and its standard error; an ensemble
    in which any network diverged gets ``inf`` (nothing is raised). ``eta0``, ``beta0`` and
    ``gamma0`` reach the compiled step as traced scalars, so each (width, depth) compiles once
    for all their values; any other swept keyword recompiles per value.

    Args:
        X: training inputs (P, D).
        y: training targets (P,).
        name: the swept keyword of ``dmft.simulate``; it must take a float ("eta0",
            "gamma0", "beta0", "momentum", "alpha", ...).
        values: (V,) the grid of values.
        widths: the network widths.
        depths: the network depths.
        steps: the budget T of updates.
        seeds: networks per (width, depth, value).
        field: "loss", or "test_loss" (pass ``X_test`` and ``y_test``).
        progress: show a progress bar while training.
        cache_dir: a folder for finished points. Each (width, depth, value) is saved there
            when it finishes, atomically, keyed by its settings, the data and the library's
            code; rerunning the same sweep loads them, so a killed sweep resumes where it
            stopped and loses nothing it finished.
        **kwargs: the other keywords of ``dmft.simulate``.

    Returns:
        ``Sweep`` with (len(widths), len(depths), V) arrays ``loss`` and ``stderr``.

    Raises:
        ValueError: bad input, as ``dmft.simulate`` raises it.
        TypeError: bad input, as ``dmft.simulate`` raises it.

    Examples:
        Three learning rates for linear networks: η₀ = 0.5 trains fastest in three steps and
        η₀ = 1000 diverges (``inf``):

        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> sweep = dmft.hyperparameter_sweep(X, y, values=[0.05, 0.5, 1e3], widths=(16,),
        ...     depths=(2,), steps=3, seeds=4, activation="linear", center=True)
        >>> sweep.loss.shape
        (1, 1, 3)
        >>> sweep.best_value().tolist(), bool(np.isinf(sweep.loss[0, 0, 2]))
        ([[0.5]], True)
    """
    values = np.asarray(values, dtype=float)
    loss = np.full((len(widths), len(depths), len(values)), np.inf)
    se = np.zeros_like(loss)
    cache = Cache(cache_dir)
    base = dict(
        name=name,
        steps=steps,
        seeds=seeds,
        field=field,
        settings={k: v for k, v in kwargs.items() if k not in ("X_test", "y_test")},
        data=array_digest(
            X, y, *(kwargs[k] for k in ("X_test", "y_test") if kwargs.get(k) is not None)
        ),
        code=code_version(),
    )
    for i, n in enumerate(widths):
        for j, L in enumerate(depths):
            for k, v in enumerate(values):
                key = make_key({**base, "width": n, "depth": L, "value": float(v)})
                hit = cache.get(key)
                if hit is not None:
                    loss[i, j, k], se[i, j, k] = hit[0]["point"]
                    continue
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
                cache.put(key, {"point": np.array([loss[i, j, k], se[i, j, k]])})
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
