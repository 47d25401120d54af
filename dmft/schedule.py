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
        Step t minimises ``Σ_μ mask[t, μ] Δ_μ² / (2|B_t|)`` with ``|B_t| = Σ_μ mask[t, μ]``: its
        gradient is ``−Σ_μ mask[t, μ] Δ_μ ∇f_μ / |B_t|`` (SPEC §3, minibatch SGD).

    Raises:
        ValueError: ``n_points`` < 1, ``steps`` < 0, or ``batch_size`` outside [1, P].
        TypeError: a count that is not an int.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> mask = dmft.batch_schedule(4, 2, 3, seed=0)
        >>> mask.shape, mask.sum(axis=1).tolist()
        ((3, 4), [2.0, 2.0, 2.0])
        >>> bool(np.all(dmft.batch_schedule(4, None, 3) == 1))  # full batch
        True
        >>> dmft.batch_schedule(4, 5, 3)
        Traceback (most recent call last):
            ...
        ValueError: `batch_size` must be in [1, 4], got 5
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
