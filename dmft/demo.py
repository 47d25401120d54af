"""The main job of ``make demo``: a small run with its plot.

Trains ensembles of ReLU depth-μP ResNets at growing width on eight random points and plots
their training loss (ensemble mean ± 2 standard errors), showing the curves converge as N grows.
Run ``python -m dmft.demo --out figures/demo.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import dmft  # noqa: E402


def run(out: str, widths=(64, 256, 1024), depth: int = 4, steps: int = 30, seeds: int = 8):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 10))
    y = np.sign(rng.normal(size=8))
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    for n in widths:
        res = dmft.simulate(
            X, y, width=n, depth=depth, activation="relu", beta0=1.0, gamma0=1.0, eta0=0.1,
            steps=steps, seeds=seeds, center=True,
        )
        dmft.plot_loss(res, ax=ax, label=f"N = {n}")
        print(f"N = {n:5d}: loss after {steps} steps = {res.mean()[-1]:.4f} ± {res.stderr()[-1]:.4f}")
    ax.set_title(f"ReLU depth-μP ResNet, L = {depth}, {seeds} seeds per width")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # write atomically: a reader never sees a half-written figure
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, out)
    print(f"figure written to {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures/demo.png", help="where to write the figure")
    args = parser.parse_args(argv)
    run(args.out)


if __name__ == "__main__":
    main()
