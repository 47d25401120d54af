"""Result containers shared by the simulator and the solver.

Both return frozen dataclasses registered as JAX pytrees, with the same field names and the
same per-run shapes, so they compare field by field. A simulation has a leading ``seeds`` axis.
Layer stacks index ``ℓ = 1 … L+1`` as ``0 … L``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dmft.errors import DivergenceError
from dmft.io import Saveable


def _at_initialisation(dtype, gamma0: bool) -> str:
    """The end of the status of a run whose loss or NTK is not finite before any update."""
    small = ", or `gamma0` too small," if gamma0 else ""
    fix = "rescale them" if dtype == "float64" else "rescale them or compute in float64"
    return (
        ", at initialisation, before any update (so `eta0` is not the cause): `X`, `y` or "
        f"`beta0` are too large{small} for {dtype}; {fix}"
    )


def _shape(x):
    return None if x is None else tuple(np.shape(x))


def depth_relative_error(loss, depth_error, loss_error, tol, xp=jnp):
    """Largest ``depth_error / max(loss, tol·loss(0))`` over the steps where the depth error is
    above three Monte Carlo standard errors (0 where there are none).

    Once the loss has fallen below ``tol`` of its initial value the error is measured against
    that floor: a loss decaying like e^{−2Kτ} has a relative depth error growing with τ
    (the rate K depends on the depth), however exact the extrapolation of the rate."""
    loss, depth_error = xp.asarray(loss), xp.asarray(depth_error)
    floor = tol * xp.abs(loss[..., :1])
    noisy = depth_error <= 3 * xp.asarray(loss_error)
    rel = depth_error / xp.maximum(loss, floor)
    return xp.max(xp.where(noisy, 0.0, rel))


@dataclasses.dataclass(frozen=True)
class SimulationResult(Saveable):
    """An ensemble of trained finite networks.

    Attributes:
        loss: (seeds, steps+1) training loss ``1/(2P) Σ_μ Δ_μ²``; ``loss[:, t]`` after t updates.
        predictions: (seeds, steps+1, P) network outputs on the training points.
        ntk: (seeds, steps+1, P, P) NTK from the kernel formula of SPEC §2 (η₀ factored out).
        phi_kernel: (seeds, L+1, steps+1, P, P) equal-time Φˡ(t,t) for ℓ = 1 … L+1.
        g_kernel: same as ``phi_kernel`` for Gˡ(t,t).
        h_kernel: same as ``phi_kernel`` for Hˡ(t,t).
        phi_two_time: (seeds, len(two_time_layers), steps+1, steps+1, P, P) two-time kernels
            Φˡ(t,s) for the layers in ``two_time_layers``.
        g_two_time: same as ``phi_two_time`` for Gˡ(t,s).
        h_two_time: same as ``phi_two_time`` for Hˡ(t,s).
        test_loss: (seeds, steps+1) or None.
        test_predictions: (seeds, steps+1, Q) or None.
        diverged_step: (seeds,) first step whose loss or NTK is not finite, −1 if none.
        params: trained parameters {"W0", "Ws", "w"} with a seeds axis, if asked for.
        two_time_layers: the ℓ values (1-based) of the two-time kernels.
        settings: the arguments that produced the result.

    ``mean(field)`` and ``stderr(field)`` average over seeds; ``status`` says whether any seed
    diverged; ``save(path)`` writes the result (see ``dmft.save``).

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> res = dmft.simulate(np.eye(2), np.array([1.0, -1.0]), width=32, depth=2,
        ...                     eta0=0.1, steps=3, seeds=4)
        >>> res.loss.shape, res.ntk.shape, res.phi_kernel.shape
        ((4, 4), (4, 4, 2, 2), (4, 3, 4, 2, 2))
        >>> res.mean("loss").shape, res.status
        ((4,), 'ok')
    """

    loss: Any
    predictions: Any
    ntk: Any
    phi_kernel: Any
    g_kernel: Any
    h_kernel: Any
    phi_two_time: Any
    g_two_time: Any
    h_two_time: Any
    test_loss: Any
    test_predictions: Any
    diverged_step: Any
    params: Any = None
    two_time_layers: tuple = ()
    settings: tuple = ()

    @property
    def config(self) -> dict:
        """The settings as a dict."""
        return dict(self.settings)

    @property
    def diverged(self) -> bool:
        return bool(np.any(np.asarray(self.diverged_step) >= 0))

    @property
    def status(self) -> str:
        """ "ok", or a sentence saying which seeds diverged at which step and what to try."""
        steps = np.asarray(self.diverged_step)
        bad = np.flatnonzero(steps >= 0)
        if bad.size == 0:
            return "ok"
        first = int(bad[np.argmin(steps[bad])])
        cfg = self.config
        head = (
            f"diverged: {bad.size} of {steps.size} seeds produced a non-finite loss or NTK, the "
            f"first at step {int(steps[first])} (seed index {first})"
        )
        if int(steps[first]) == 0:
            return head + _at_initialisation(cfg.get("dtype"), gamma0=True)
        if cfg.get("dynamics") == "flow":
            return (
                f"{head}; raise `substeps` (now {cfg.get('substeps')}) or `steps`: the Heun step "
                "t_max/(steps·substeps) is too large"
            )
        return f"{head}; lower `eta0` (now {cfg.get('eta0')}) or `gamma0`"

    def raise_if_diverged(self):
        if self.diverged:
            raise DivergenceError(
                self.status,
                step=int(
                    np.min(
                        np.where(
                            np.asarray(self.diverged_step) >= 0,
                            self.diverged_step,
                            np.iinfo(np.int32).max,
                        )
                    )
                ),
            )

    def mean(self, field: str = "loss"):
        """Ensemble mean of a field over seeds."""
        return np.mean(np.asarray(getattr(self, field)), axis=0)

    def stderr(self, field: str = "loss"):
        """Standard error of the ensemble mean of a field (ddof = 1; zero for one seed)."""
        x = np.asarray(getattr(self, field))
        if x.shape[0] < 2:
            return np.zeros(x.shape[1:])
        return np.std(x, axis=0, ddof=1) / np.sqrt(x.shape[0])

    def __repr__(self):
        cfg = self.config
        lines = [
            "SimulationResult(",
            f"  width={cfg.get('width')}, depth={cfg.get('depth')}, "
            f"activation={cfg.get('activation')!r}, parameterization={cfg.get('parameterization')!r},",
            f"  seeds={np.shape(self.loss)[0]}, steps={np.shape(self.loss)[1] - 1}, "
            f"status={self.status!r},",
            f"  loss: {_shape(self.loss)}, final mean {float(np.nanmean(np.asarray(self.loss)[:, -1])):.6g},",
            f"  predictions: {_shape(self.predictions)}, ntk: {_shape(self.ntk)},",
            f"  phi_kernel/g_kernel/h_kernel: {_shape(self.phi_kernel)},",
            f"  two-time kernels for layers {self.two_time_layers}: {_shape(self.phi_two_time)},",
        ]
        if self.test_loss is not None:
            lines.append(f"  test_loss: {_shape(self.test_loss)},")
        lines.append(")")
        return "\n".join(lines)


_SIM_DATA = [
    f.name
    for f in dataclasses.fields(SimulationResult)
    if f.name not in ("two_time_layers", "settings")
]
jax.tree_util.register_dataclass(
    SimulationResult, data_fields=_SIM_DATA, meta_fields=["two_time_layers", "settings"]
)


@dataclasses.dataclass(frozen=True)
class Solution(Saveable):
    """The N → ∞ DMFT at finite depth (SPEC §3): one trajectory, no seeds axis.

    Field names and per-run shapes match ``SimulationResult``, so the two compare field by
    field (``sim.mean("loss")`` against ``sol.loss``).

    Attributes:
        loss: (steps+1,) training loss.
        predictions: (steps+1, P).
        ntk: (steps+1, P, P).
        phi_kernel: (L+1, steps+1, P, P) equal-time kernel Φˡ(t,t), ℓ = 1 … L+1.
        g_kernel: same as ``phi_kernel`` for Gˡ(t,t).
        h_kernel: same as ``phi_kernel`` for Hˡ(t,t).
        phi_two_time: (L+1, steps+1, steps+1, P, P) Φˡ(t,s) for every layer.
        g_two_time: same as ``phi_two_time`` for Gˡ(t,s).
        h_two_time: same as ``phi_two_time`` for Hˡ(t,s).
        a_response: (L, steps+1, steps+1, P, P) Aˡ(t,s) = E[∂φ(hˡ(t))/∂rˡ(s)], ℓ = 1 … L.
        b_response: (L, steps+1, steps+1, P, P) Bˡ(t,s) = E[∂gˡ⁺¹(t)/∂uˡ(s)], ℓ = 1 … L.
        test_loss: (steps+1,) or None.
        test_predictions: (steps+1, Q) or None.
        loss_error: (steps+1,) Monte Carlo standard error of the loss (zeros for exact paths).
        converged: whether the solve met its tolerance (Monte Carlo: the largest relative
            standard error of the loss is at most ``tol``).
        iterations: passes over the trajectory (1: both paths march causally in time, nothing
            is iterated).
        residuals: (iterations,) the error measure ``converged`` was judged on (the largest
            relative Monte Carlo error of the loss; 0 for the exact path).
        test_loss_error: (steps+1,) Monte Carlo standard error of the test loss, or None.
        diverged_step: first step with a non-finite loss or NTK, −1 if none.
        times: (steps+1,) time of each point, τ = η₀·t for gradient descent and the flow's grid
            for ``dynamics="flow"``.
        time_error: (steps+1,) gradient flow with ``flow_order=2``: |extrapolated − finer solve|
            of the loss, an error estimate of the first-order solve (the extrapolated value is
            more accurate). None otherwise.
        depth_error: (steps+1,) ``depth=math.inf``: |extrapolation − extrapolation without the
            shallowest depth| of the loss. None otherwise.
        ladder: ``depth=math.inf``: the per-depth solutions (a tuple), else None.
        memory_estimate: bytes the solver estimated before starting.
        method: "linear-exact" or "monte-carlo".
        settings: the arguments that produced the solution.

    ``status`` is "ok" or a sentence saying what went wrong and what to change; ``save(path)``
    writes the solution (see ``dmft.save``).

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> sol = dmft.solve_dmft(np.eye(2), np.array([1.0, -1.0]), depth=2,
        ...                       activation="linear", eta0=0.1, steps=3)
        >>> sol.loss.shape, sol.ntk.shape, sol.phi_two_time.shape, sol.a_response.shape
        ((4,), (4, 2, 2), (3, 4, 4, 2, 2), (2, 4, 4, 2, 2))
        >>> sol.method, sol.status, bool(sol.converged)
        ('linear-exact', 'ok', True)
    """

    loss: Any
    predictions: Any
    ntk: Any
    phi_kernel: Any
    g_kernel: Any
    h_kernel: Any
    phi_two_time: Any
    g_two_time: Any
    h_two_time: Any
    a_response: Any
    b_response: Any
    test_loss: Any
    test_predictions: Any
    loss_error: Any
    converged: Any
    iterations: Any
    residuals: Any
    diverged_step: Any
    test_loss_error: Any = None
    times: Any = None
    time_error: Any = None
    depth_error: Any = None
    ladder: Any = None
    memory_estimate: int = 0
    method: str = ""
    settings: tuple = ()

    @property
    def config(self) -> dict:
        return dict(self.settings)

    @property
    def two_time_layers(self) -> tuple:
        return tuple(range(1, np.shape(self.phi_kernel)[0] + 1))

    @property
    def depth_residual(self) -> float:
        """``depth=math.inf`` with three or more depths: the largest relative depth error
        ``converged`` was judged on (0 otherwise)."""
        if self.depth_error is None or len(self.config.get("depths") or ()) < 3:
            return 0.0
        return float(
            depth_relative_error(
                self.loss, self.depth_error, self.loss_error, self.config.get("tol", 0.05), xp=np
            )
        )

    @property
    def status(self) -> str:
        step = int(np.max(np.asarray(self.diverged_step)))
        if step == 0:
            return "diverged: the loss or the NTK is not finite at step 0" + _at_initialisation(
                self.config.get("dtype"), gamma0=False
            )
        if step >= 0 and self.config.get("dynamics") == "flow":
            return (
                f"diverged: the loss or the NTK is not finite from grid point {step}; raise "
                f"`steps` (now {self.config.get('steps')}): the flow's time step t_max/steps must "
                "satisfy dτ·λ_max(K)/P < 2"
            )
        if step >= 0:
            return (
                f"diverged: the loss or the NTK is not finite from step {step}; lower `eta0` "
                f"(now {self.config.get('eta0')}) — full-batch gradient descent is stable only for "
                "η₀·λ_max(K)/P < 2 (2(1+μ) with momentum μ)"
            )
        worst = float(np.max(np.asarray(self.residuals)))
        if not bool(np.all(np.asarray(self.converged))) and worst <= self.config.get("tol", 0.0):
            if self.depth_error is not None:  # Monte Carlo converged: the depth ladder did not
                depths = self.config.get("depths")
                return (
                    f"not converged: the depth extrapolation moves by {100 * self.depth_residual:.3g}% "
                    f"of the loss when the shallowest depth of `depths` = {depths} is dropped, above "
                    f"`tol` = {self.config.get('tol')}: the rungs are not in their 1/L regime; add "
                    f"deeper depths (e.g. {tuple(depths[1:]) + (2 * depths[-1],)}), or lower `eta0` "
                    "if it is near the stability edge, and compare with the rungs in `ladder`"
                )
        if not bool(np.all(np.asarray(self.converged))):
            return (
                f"not converged: the Monte Carlo error of the loss reaches {100 * worst:.3g}% of "
                f"the loss, above `tol` = {self.config.get('tol')}; raise `samples` (now "
                f"{self.config.get('samples')}; the error falls as samples^-1/2 or faster) or `replicas`, "
                "or loosen `tol`"
                + (
                    "; an error far above the samples^-1/2 trend can be float32 rounding of large "
                    "fields (large `beta0` or kernels): try dtype='float64'"
                    if self.config.get("dtype") == "float32"
                    else ""
                )
            )
        return "ok"

    def __repr__(self):
        cfg = self.config
        loss = np.asarray(self.loss)
        lines = [
            "Solution(",
            f"  method={self.method!r}, depth={cfg.get('depth')}, activation={cfg.get('activation')!r}, "
            f"steps={loss.shape[-1] - 1}, status={self.status!r},",
            f"  loss: {_shape(self.loss)}, final {float(loss.reshape(-1, loss.shape[-1])[0, -1]):.6g},",
            f"  predictions: {_shape(self.predictions)}, ntk: {_shape(self.ntk)},",
            f"  kernels: {_shape(self.phi_two_time)}, responses: {_shape(self.a_response)},",
            f"  iterations={self.iterations}, memory_estimate={self.memory_estimate / 2**20:.1f} MiB,",
        ]
        if self.test_loss is not None:
            lines.append(f"  test_loss: {_shape(self.test_loss)},")
        lines.append(")")
        return "\n".join(lines)


_SOL_META = ["memory_estimate", "method", "settings"]
jax.tree_util.register_dataclass(
    Solution,
    data_fields=[f.name for f in dataclasses.fields(Solution) if f.name not in _SOL_META],
    meta_fields=_SOL_META,
)
