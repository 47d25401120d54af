"""Plots of results; every function draws on a given Matplotlib axis (or a new figure)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np


def save_figure(fig, path, dpi=120) -> None:
    """Save ``fig`` to ``path`` atomically (a temporary file, then a rename), creating the
    folder: a reader never sees a half-written image.

    Args:
        fig: a Matplotlib figure.
        path: the file; its extension picks the format (png when it has none).
        dpi: resolution of raster formats.

    Raises:
        ValueError: a format Matplotlib cannot write.
        OSError: the folder cannot be created.

    Examples:
        >>> import os
        >>> import tempfile
        >>> import matplotlib.pyplot as plt
        >>> import dmft
        >>> fig, ax = plt.subplots()
        >>> _ = ax.plot([0, 1], [1, 0])
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "figures", "line.png")
        ...     dmft.save_figure(fig, path)
        ...     print(sorted(os.listdir(os.path.dirname(path))))
        ['line.png']
        >>> plt.close(fig)
    """
    from dmft.cache import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=os.path.splitext(path)[1][1:] or "png")


def _axes(ax, ncols=1, size=(4.5, 3.4)):
    if ax is not None:
        first = np.ravel(ax)[0] if isinstance(ax, (list, tuple, np.ndarray)) else ax
        return first.figure, ax
    fig, ax = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]), constrained_layout=True)
    return fig, ax


def plot_loss(result, *, ax=None, label=None, field="loss", color=None, logy=True):
    """Loss against step: the ensemble mean with a ±2 standard-error band for a simulation,
    the curve (with its ±2 standard-error Monte Carlo band, if any) for a DMFT solution.

    Args:
        result: a ``dmft.SimulationResult`` (seeds first) or a ``dmft.Solution``.
        ax: the axis to draw on (None: a new figure).
        label: legend entry (a legend is drawn when given).
        color: line colour.
        field: "loss" or "test_loss" (the result must have a test set).
        logy: logarithmic loss axis.

    Returns:
        ``(fig, ax)``.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> res = dmft.simulate(X, y, width=16, depth=2, activation="linear", steps=3, seeds=4,
        ...                     center=True)
        >>> fig, ax = dmft.plot_loss(res, label="N = 16")
        >>> len(ax.lines), ax.get_yscale(), ax.get_xlabel()
        (1, 'log', 'step t')
        >>> plt.close(fig)
    """
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
    (one line per N), log–log. Flat lines mean the parameterization is stable.

    Args:
        cc: a ``dmft.CoordCheck``.
        axes: two axes to draw on (None: a new figure).

    Returns:
        ``(fig, axes)``.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> cc = dmft.coord_check(X, y, widths=(16, 32), depths=(2,), steps=3, seeds=4,
        ...                       activation="linear")
        >>> fig, axes = dmft.plot_coord_check(cc)
        >>> len(axes), axes[0].get_xlabel(), axes[1].get_xlabel()
        (2, 'width N', 'depth L')
        >>> plt.close(fig)
    """
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


def plot_convergence(
    study,
    quantity="loss",
    *,
    time="mean",
    width=None,
    min_depth=1,
    correction=False,
    joint_terms=("1/N", "1/L"),
    axes=None,
):
    """Three log–log panels of a ``dmft.ConvergenceStudy`` for one quantity.

    1. Width: ``E[(q_N − q_{∞,L})²]`` against N, one colour per depth, with the fitted common
       exponent (solid) and the theory slope −1 (dashed).
    2. Depth: ``|E[q_{N,L}] − q_{∞,∞}|`` against L at one width (default the largest) and the
       DMFT's own ``|q_{∞,L} − q_{∞,∞}|``, with fits (over L >= ``min_depth``, with the
       next-order term if ``correction``) and the slope −1 (needs the L = ∞ solve).
    3. Joint: ``|E[q_{N,L}] − q_{∞,∞}|`` (RMS over elements) against N per depth, with the
       fitted model (``joint_terms``, over L >= ``min_depth``) as lines.

    Every deviation is summarised over time by ``time`` ("mean", "final" or a step). Without
    an L = ∞ solve, or with a single depth, only the width panel is drawn. A depth fit whose
    bias is not above the ensemble's noise is drawn as data only, with no line.

    Args:
        study: a ``dmft.ConvergenceStudy`` with at least two widths.
        quantity: one of the study's ``quantities``.
        time: "mean" over t = 1 … T, "final", or a step index.
        width: the width of the depth panel (one of ``study.widths``; default the largest).
        min_depth: as for ``dmft.fit_depth_rate``.
        correction: as for ``dmft.fit_depth_rate``.
        joint_terms: the terms of the joint model, as for ``dmft.fit_joint``.
        axes: three axes (one without the limit) to draw on (None: a new figure).

    Returns:
        ``(fig, axes)`` with ``axes`` a NumPy array of three axes (or one).

    Raises:
        ValueError: as the fits raise it (e.g. fewer than two widths).

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> fig, axes = dmft.plot_convergence(study, "ntk")
        >>> len(axes), axes[0].get_xlabel(), axes[1].get_xlabel()
        (3, 'width N', 'depth L')
        >>> plt.close(fig)
    """
    from dmft.convergence import _time_summary, fit_depth_rate, fit_width_rate

    has_limit = study.limit is not None and len(study.depths) >= 2
    fig, axes = _axes(axes, ncols=3 if has_limit else 1)
    axes = np.atleast_1d(axes)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fit = fit_width_rate(study, quantity, time=time)
    ax = axes[0]
    n = np.asarray(fit.x, float)
    for j, L in enumerate(study.depths):
        c = colors[j % len(colors)]
        ax.errorbar(n, fit.y[:, j], yerr=2 * fit.yerr[:, j], fmt="o", color=c, label=f"L = {L}")
        ax.plot(n, np.exp(fit.intercepts[j]) * n**fit.exponent, "-", color=c, lw=1)
        ax.plot(n, fit.y[0, j] * (n / n[0]) ** fit.theory, "--", color=c, lw=0.8, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width N")
    ax.set_ylabel(rf"$E[(q_N - q_\infty)^2]$, {quantity}")
    lo, hi = fit.interval
    ax.set_title(f"slope {fit.exponent:+.2f} [{lo:+.2f}, {hi:+.2f}] (dashed: −1)", fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    if not has_limit:
        return fig, axes

    ax = axes[1]
    wi = len(study.widths) - 1 if width is None else study.widths.index(width)
    kw = dict(time=time, min_depth=min_depth, correction=correction)
    for label, marker, fit_kw in (
        (f"N = {study.widths[wi]}", "o", dict(width=study.widths[wi])),
        ("DMFT, N = ∞", "s", dict(dmft=True)),
    ):
        try:
            f = fit_depth_rate(study, quantity, **fit_kw, **kw)
        except ValueError:  # bias not above the ensemble's noise: show the data, fit nothing
            bias, _ = study.bias(quantity, against="limit")
            L = np.asarray(study.depths, float)
            y = _time_summary(bias[wi], time)
            ax.plot(L, y, marker, label=f"{label}: bias not above noise, no fit")
            continue
        L = np.asarray(f.x, float)
        (line,) = ax.plot(L, f.y[:, 0], marker, label=f"{label}: slope {f.exponent:+.2f}")
        ax.plot(L, f.curve(L), "-", color=line.get_color(), lw=1)
        ax.plot(L, f.y[0, 0] * (L / L[0]) ** -1.0, "--", color=line.get_color(), lw=0.8, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth L")
    ax.set_ylabel(rf"$|E[q_{{N,L}}] - q_{{\infty,\infty}}|$, {quantity}")
    ax.set_title("depth (dashed: −1)", fontsize=9)
    ax.legend(frameon=False, fontsize=7)

    plot_joint_fit(study, quantity, time=time, terms=joint_terms, min_depth=min_depth, ax=axes[2])
    return fig, axes


def plot_joint_fit(
    study, quantity="loss", *, time="mean", terms=("1/N", "1/L"), min_depth=1, ax=None
):
    """``|E[q_{N,L}] − q_{∞,∞}|`` (RMS over elements, ±2 standard errors) against N, one colour
    per depth >= ``min_depth``, with the fitted model (sum of ``terms``) as lines; the title
    gives χ²/dof. Returns the figure and the axis.

    Args:
        study: a ``dmft.ConvergenceStudy`` solved with ``limit=True``.
        quantity: as for ``dmft.fit_joint``.
        time: as for ``dmft.fit_joint``.
        terms: as for ``dmft.fit_joint``.
        min_depth: as for ``dmft.fit_joint``.
        ax: the axis to draw on (None: a new figure).

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: as ``dmft.fit_joint`` raises it.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> fig, ax = dmft.plot_joint_fit(study, "ntk")
        >>> len(ax.lines) >= 2, ax.get_title().startswith("1/N + 1/L (lines): χ²/dof")
        (True, True)
        >>> plt.close(fig)
    """
    from dmft.convergence import fit_joint

    fig, ax = _axes(ax)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    joint = fit_joint(study, quantity, time=time, terms=terms, min_depth=min_depth)
    n = np.asarray(joint.widths, float)
    for j, L in enumerate(joint.depths):
        c = colors[study.depths.index(L) % len(colors)]
        ax.errorbar(
            n, joint.observed[:, j], yerr=2 * joint.noise[:, j], fmt="o", color=c, label=f"L = {L}"
        )
        ax.plot(n, joint.model[:, j], "-", color=c, lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width N")
    ax.set_ylabel(rf"$|E[q_{{N,L}}] - q_{{\infty,\infty}}|$, {quantity}")
    ax.set_title(
        f"{' + '.join(terms)} (lines): χ²/dof = {joint.chi2:.0f}/{joint.dof} = "
        f"{joint.chi2 / max(joint.dof, 1):.2f}",
        fontsize=9,
    )
    ax.legend(frameon=False, fontsize=7)
    return fig, ax
