"""Coordinate check: per-layer feature sizes and feature updates against width and depth.

The standard way to verify a parameterization: train a few steps at several N and L and look at
the size of each layer's features ``‖hˡ(0)‖/√N`` and of their updates ``‖hˡ(t) − hˡ(0)‖/√N``
(RMS over neurons, training points and seeds). In depth-μP both are O(1) in N and
L; in μP without the 1/√L branch factor they grow with depth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmft.io import Saveable
from dmft.simulate import simulate


@dataclasses.dataclass(frozen=True)
class CoordCheck(Saveable):
    """Result of ``coord_check``.

    Attributes:
        widths: the grid's widths N.
        depths: the grid's depths L.
        feature_size: {(N, L): (L+1,) RMS of hˡ(0)} for ℓ = 1 … L+1 (index ℓ − 1).
        update_size: {(N, L): (L+1,) RMS of hˡ(T) − hˡ(0)}.
        output_update: {(N, L): RMS of f(T) − f(0) over points and seeds} (a float).
        settings: the shared keyword arguments.

    ``last_layer_updates()`` tabulates the update of h^{L+1} as a (widths, depths) array.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> cc = dmft.coord_check(X, y, widths=(16, 32), depths=(2,), steps=3, seeds=4,
        ...                       activation="linear")
        >>> cc.feature_size[(16, 2)].shape, cc.last_layer_updates().shape
        ((3,), (2, 1))
    """

    widths: tuple
    depths: tuple
    feature_size: dict
    update_size: dict
    output_update: dict
    settings: dict

    def last_layer_updates(self) -> np.ndarray:
        """(len(widths), len(depths)) array of the last layer's update size, RMS of
        h^{L+1}(T) − h^{L+1}(0)."""
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

    From the two-time kernels ``Hˡ(t,s) = hˡ(t)·hˡ(s)/N`` of every layer (SPEC §2), per layer:

        feature_size = √(E[Hˡ_μμ(0,0)]),   update_size = √(E[Hˡ_μμ(T,T) + Hˡ_μμ(0,0) − 2Hˡ_μμ(T,0)])

    with E the mean over training points μ and seeds, and ``output_update`` the RMS of
    ``f(T) − f(0)`` over points and seeds. Networks that diverge are kept (their sizes are NaN or
    inf) instead of raising.

    Args:
        X: training inputs (P, D).
        y: training targets (P,).
        widths: grid of N.
        depths: grid of L.
        steps: updates T before measuring.
        seeds: networks per grid point.
        parameterization: "depth-mup", "mup" or "sp"; other keywords (``activation``, ``eta0``,
            ``gamma0``, …) are passed to ``dmft.simulate`` (not ``two_time_layers`` or
            ``throw``, which the check sets).

    Returns:
        ``CoordCheck``.

    Raises:
        ValueError: bad input, as ``dmft.simulate`` raises it.
        TypeError: bad input, as ``dmft.simulate`` raises it.

    Examples:
        At init on orthonormal points (Kx = I) the first layer has ``H¹ = Kx``, so its feature
        size is close to 1 at any width:

        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> cc = dmft.coord_check(X, y, widths=(16, 32), depths=(2,), steps=3, seeds=4,
        ...                       activation="linear")
        >>> cc.last_layer_updates().shape
        (2, 1)
        >>> bool(abs(cc.feature_size[(32, 2)][0] - 1.0) < 0.2)
        True
        >>> print(cc)  # doctest: +ELLIPSIS
        CoordCheck: RMS feature update of h^{L+1} after 3 steps (depth-mup)
          N \\ L          2
              16 ...
              32 ...
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
