"""The main job of ``make demo``: a small DMFT solve and the networks it describes, in one plot.

Solves the infinite-width DMFT of a linear depth-μP ResNet (L = 4, four random points, rich
regime γ₀ = 1) and trains ensembles of real networks at growing width on the same data; the
plot shows the networks' loss (ensemble mean ± 2 standard errors) approaching the DMFT curve.
Run ``python -m dmft.demo --out figures/demo.png``.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import dmft  # noqa: E402
from dmft.plot import save_figure  # noqa: E402


def run(out: str, widths=(64, 256, 1024), depth: int = 4, steps: int = 30, seeds: int = 16):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 10))
    y = np.sign(rng.normal(size=4))
    settings = dict(depth=depth, activation="linear", beta0=1.0, gamma0=1.0, eta0=0.1, steps=steps)
    sol = dmft.solve_dmft(X, y, **settings)
    print(sol)
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    for n in widths:
        res = dmft.simulate(X, y, width=n, seeds=seeds, center=True, **settings)
        dmft.plot_loss(res, ax=ax, label=f"networks, N = {n}")
        gap = np.max(np.abs(res.mean() - np.asarray(sol.loss)) / np.asarray(sol.loss))
        print(
            f"N = {n:5d}: loss after {steps} steps = {res.mean()[-1]:.4f} ± "
            f"{res.stderr()[-1]:.4f}; largest relative gap to DMFT {gap:.3f}"
        )
    ax.plot(np.asarray(sol.loss), "k--", lw=2, label="DMFT, N = ∞")
    ax.legend(frameon=False, fontsize=8)
    print(f"DMFT loss after {steps} steps = {float(sol.loss[-1]):.4f}")
    ax.set_title(f"linear depth-μP ResNet, L = {depth}, γ₀ = 1, {seeds} seeds", fontsize=10)
    save_figure(fig, out)
    print(f"figure written to {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures/demo.png", help="where to write the figure")
    args = parser.parse_args(argv)
    run(args.out)


if __name__ == "__main__":
    main()
