"""Minibatch schedules, shared by the simulator and the solver so both see the same batches."""

from __future__ import annotations

import numpy as np

from dmft.settings import check_int


def batch_schedule(n_points: int, batch_size: int | None, steps: int, seed: int = 0) -> np.ndarray:
    """The minibatch used at each step of SGD, as a 0/1 mask.

    Each step draws ``batch_size`` distinct training points uniformly at random (a fresh draw per
    step, from ``numpy.random.default_rng(seed)``), so the schedule is the same on every platform
    and can be handed to ``solve_dmft`` to reproduce the simulator's batches.

    Args:
        n_points: P, the number of training points.
        batch_size: points per step, in [1, P]; ``None`` means full batch.
        steps: number of updates T.
        seed: the ``batch_seed``.

    Returns:
        Array (steps, n_points) of float64 with ``mask[t, μ] = 1`` when μ is in the batch of step t.
        The loss gradient of step t is ``Σ_μ mask[t, μ] Δ_μ ∂f_μ / |B_t|``.

    Example:
        >>> batch_schedule(4, 2, 3, seed=0).sum(axis=1)
        array([2., 2., 2.])
    """
    n_points = check_int("n_points", n_points, minimum=1)
    steps = check_int("steps", steps, minimum=0)
    mask = np.zeros((steps, n_points))
    if batch_size is None or batch_size == n_points:
        mask[:] = 1.0
        return mask
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > n_points:
        raise ValueError(f"`batch_size` must be in [1, {n_points}], got {batch_size}")
    rng = np.random.default_rng(seed)
    for t in range(steps):
        mask[t, rng.choice(n_points, size=batch_size, replace=False)] = 1.0
    return mask
