"""Plots of results; every function draws on a given Matplotlib axis (or a new figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _axes(ax, ncols=1, size=(4.5, 3.4)):
    if ax is not None:
        first = np.ravel(ax)[0] if isinstance(ax, (list, tuple, np.ndarray)) else ax
        return first.figure, ax
    fig, ax = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]), constrained_layout=True)
    return fig, ax


def plot_loss(result, *, ax=None, label=None, field="loss", color=None, logy=True):
    """Loss against step: the ensemble mean with a ±2 standard-error band for a simulation,
    the curve (with its Monte Carlo band, if any) for a DMFT solution."""
    fig, ax = _axes(ax)
    y = np.asarray(getattr(result, field))
    if y.ndim == 2:  # seeds first
        mean, se = result.mean(field), result.stderr(field)
    else:
        err = getattr(result, f"{field}_error", None)
        mean, se = y, np.zeros_like(y) if err is None else np.asarray(err)
    t = np.arange(mean.shape[0])
    (line,) = ax.plot(t, mean, label=label, color=color)
    if np.any(se > 0):
        ax.fill_between(t, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.25, lw=0)
    ax.set_xlabel("step t")
    ax.set_ylabel("test loss" if field == "test_loss" else "training loss")
    if logy:
        ax.set_yscale("log")
    if label is not None:
        ax.legend(frameon=False)
    return fig, ax


def plot_coord_check(cc, *, axes=None):
    """Two panels: the last layer's feature update against N (one line per L) and against L
    (one line per N), log–log. Flat lines mean the parameterization is stable."""
    fig, axes = _axes(axes, ncols=2)
    upd = cc.last_layer_updates()
    for j, L in enumerate(cc.depths):
        axes[0].plot(cc.widths, upd[:, j], "o-", label=f"L = {L}")
    for i, n in enumerate(cc.widths):
        axes[1].plot(cc.depths, upd[i], "s-", label=f"N = {n}")
    for ax, xl in zip(axes, ("width N", "depth L"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(r"RMS $h^{L+1}(T) - h^{L+1}(0)$")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(
        f"coordinate check, {cc.settings.get('parameterization')}, T = {cc.settings.get('steps')}"
    )
    return fig, axes
