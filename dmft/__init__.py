"""dmft: dynamical mean field theory of deep residual networks, and finite networks to check it.

Public names only; everything else may change.
"""

from dmft.activations import Activation, get_activation
from dmft.errors import ConvergenceError, DivergenceError
from dmft.results import SimulationResult
from dmft.schedule import batch_schedule
from dmft.simulate import estimate_memory, simulate

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ConvergenceError",
    "DivergenceError",
    "SimulationResult",
    "batch_schedule",
    "estimate_memory",
    "get_activation",
    "simulate",
]
