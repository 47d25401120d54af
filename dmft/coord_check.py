"""Coordinate check: per-layer feature sizes and feature updates against width and depth.

The standard way to verify a parameterization: train a few steps at several N and L and look at
the size of each layer's features ``‖hˡ(0)‖/√N`` and of their updates ``‖hˡ(t) − hˡ(0)‖/√N``
(RMS over neurons and training points, averaged over seeds). In depth-μP both are O(1) in N and
L; in μP without the 1/√L branch factor they grow with depth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmft.simulate import simulate


@dataclasses.dataclass(frozen=True)
class CoordCheck:
    """Result of :func:`coord_check`.

    Attributes:
        widths, depths: the grid.
        feature_size: {(N, L): (L+1,) RMS of hˡ(0)} for ℓ = 1 … L+1.
        update_size: {(N, L): (L+1,) RMS of hˡ(T) − hˡ(0)}.
        output_update: {(N, L): RMS of f(T) − f(0) over points}.
        settings: the shared keyword arguments.
    """

    widths: tuple
    depths: tuple
    feature_size: dict
    update_size: dict
    output_update: dict
    settings: dict

    def last_layer_updates(self) -> np.ndarray:
        """(len(widths), len(depths)) array of the last layer's update size."""
        return np.array([[self.update_size[(n, L)][-1] for L in self.depths] for n in self.widths])

    def __repr__(self):
        rows = [
            "CoordCheck: RMS feature update of h^{L+1} after "
            f"{self.settings.get('steps')} steps ({self.settings.get('parameterization')})",
            "  N \\ L " + "".join(f"{L:>10d}" for L in self.depths),
        ]
        for n, row in zip(self.widths, self.last_layer_updates(), strict=True):
            rows.append(f"  {n:6d} " + "".join(f"{v:10.4g}" for v in row))
        return "\n".join(rows)


def coord_check(
    X,
    y,
    *,
    widths=(256, 512, 1024, 2048),
    depths=(4, 8, 16, 32, 64),
    steps: int = 3,
    seeds: int = 4,
    parameterization: str = "depth-mup",
    **kwargs,
) -> CoordCheck:
    """Measure feature and update sizes for every (N, L) on the grid.

    Args:
        X, y: training data (P, D), (P,).
        widths, depths: grid of N and L.
        steps: updates before measuring.
        seeds: networks per grid point.
        parameterization: as in :func:`dmft.simulate`; other keywords are passed to it.

    Returns:
        :class:`CoordCheck`.

    Example:
        >>> import numpy as np
        >>> cc = coord_check(np.eye(2), np.array([1.0, -1.0]), widths=(32, 64), depths=(2,),
        ...                  steps=2, seeds=1)
        >>> cc.last_layer_updates().shape
        (2, 1)
    """
    feat, upd, out = {}, {}, {}
    for n in widths:
        for L in depths:
            res = simulate(
                X,
                y,
                width=n,
                depth=L,
                steps=steps,
                seeds=seeds,
                parameterization=parameterization,
                two_time_layers=tuple(range(1, L + 2)),
                throw=False,
                **kwargs,
            )
            H = np.asarray(res.h_two_time, dtype=np.float64)  # (S, L+1, T+1, T+1, P, P)
            h00 = np.einsum("slpp->slp", H[:, :, 0, 0])
            htt = np.einsum("slpp->slp", H[:, :, -1, -1])
            ht0 = np.einsum("slpp->slp", H[:, :, -1, 0])
            feat[(n, L)] = np.sqrt(h00.mean(axis=(0, 2)))
            upd[(n, L)] = np.sqrt(np.clip(htt + h00 - 2 * ht0, 0, None).mean(axis=(0, 2)))
            df = np.asarray(res.predictions[:, -1] - res.predictions[:, 0])
            out[(n, L)] = float(np.sqrt(np.mean(df**2)))
    settings = dict(steps=steps, seeds=seeds, parameterization=parameterization, **kwargs)
    return CoordCheck(tuple(widths), tuple(depths), feat, upd, out, settings)
