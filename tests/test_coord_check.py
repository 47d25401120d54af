"""Acceptance: depth-μP feature updates are stable in N and L; μP's grow with L."""

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from dmft.coord_check import coord_check  # noqa: E402
from dmft.plot import plot_coord_check  # noqa: E402


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 5)), rng.normal(size=4)


def test_depth_mup_updates_stable_in_width_and_depth(tmp_path):
    X, y = _data()
    kw = dict(steps=3, seeds=4, parameterization="depth-mup", eta0=0.05, beta0=0.5)
    wide = coord_check(X, y, widths=(256, 2048), depths=(4,), **kw).last_layer_updates()[:, 0]
    deep = coord_check(X, y, widths=(256,), depths=(4, 64), **kw)
    d = deep.last_layer_updates()[0]
    assert abs(wide[1] / wide[0] - 1) < 0.2, wide
    assert abs(d[1] / d[0] - 1) < 0.2, d
    assert d[0] > 1e-3  # features really moved
    fig, _ = plot_coord_check(deep)
    fig.savefig(tmp_path / "cc.png")


def test_mup_updates_grow_with_depth():
    X, y = _data()
    cc = coord_check(
        X,
        y,
        widths=(256,),
        depths=(4, 16),
        steps=3,
        seeds=4,
        parameterization="mup",
        eta0=0.05,
        beta0=0.5,
    )
    d = cc.last_layer_updates()[0]
    assert d[1] > 2 * d[0], d
