"""dmft: dynamical mean field theory of deep residual networks, and finite networks to check it.

Public names only; everything else may change.
"""

from dmft.activations import Activation, get_activation
from dmft.convergence import (
    ConvergenceStudy,
    JointFit,
    RateFit,
    convergence_study,
    extrapolate_width,
    fit_depth_rate,
    fit_joint,
    fit_width_rate,
    load_study,
)
from dmft.coord_check import CoordCheck, coord_check
from dmft.errors import ConvergenceError, DivergenceError
from dmft.io import load, save
from dmft.lazy import LazyKernels, gaussian_expectations, lazy_errors, lazy_kernels
from dmft.plot import (
    plot_convergence,
    plot_coord_check,
    plot_joint_fit,
    plot_loss,
    save_figure,
)
from dmft.results import SimulationResult, Solution
from dmft.schedule import batch_schedule
from dmft.simulate import estimate_memory, simulate
from dmft.solve import solve_dmft
from dmft.transfer import Sweep, hyperparameter_sweep

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ConvergenceError",
    "ConvergenceStudy",
    "CoordCheck",
    "DivergenceError",
    "JointFit",
    "LazyKernels",
    "RateFit",
    "SimulationResult",
    "Solution",
    "Sweep",
    "batch_schedule",
    "convergence_study",
    "coord_check",
    "estimate_memory",
    "extrapolate_width",
    "fit_depth_rate",
    "fit_joint",
    "fit_width_rate",
    "gaussian_expectations",
    "get_activation",
    "hyperparameter_sweep",
    "lazy_errors",
    "lazy_kernels",
    "load",
    "load_study",
    "plot_convergence",
    "plot_coord_check",
    "plot_joint_fit",
    "plot_loss",
    "save",
    "save_figure",
    "simulate",
    "solve_dmft",
]
