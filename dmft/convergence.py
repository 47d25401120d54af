"""How fast finite networks approach the DMFT limit in width N and depth L (SPEC §7).

``convergence_study`` trains ensembles of networks over a grid of widths and depths, solves
the DMFT for the same settings at every depth and at L = ∞, and returns a
``ConvergenceStudy`` with the deviations of each quantity over training time. The fits
read rates off it:

- ``fit_width_rate``: the exponent p of ``E[(q_N − q_∞)²] ∝ N^p`` (theory −1), the DMFT at
  the same depth as q_∞, one exponent shared by every depth of the grid;
- ``fit_depth_rate``: the exponent of ``|E[q_{N,L}] − q_{∞,∞}|`` in L at one width (theory −1),
  or of the DMFT's own ``|q_{∞,L} − q_{∞,∞}|``;
- ``fit_joint``: ``E[q_{N,L}] − q_{∞,∞} ≈ a/N + b/L`` over the whole grid, with residuals.

Exponents come with bootstrap intervals (seeds resampled within every grid cell). Finished
points are cached on disk (``dmft.cache``), so an interrupted study resumes.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from scipy import stats
from tqdm import tqdm

from dmft.cache import Cache, array_digest, code_version, make_key, read_npz
from dmft.io import Saveable, load
from dmft.settings import check_data, check_depth_ladder, check_int, checking_only
from dmft.simulate import simulate
from dmft.solve import DEFAULT_DEPTHS, SIMULATOR_ONLY, solve_dmft

QUANTITIES = ("loss", "ntk", "predictions", "kernels", "test_loss")
DEFAULT_QUANTITIES = ("loss", "ntk", "predictions", "kernels")
# Layer kernels are compared at these fractions τ = (ℓ − 1)/L of depth, so that every depth,
# and the L = ∞ limit, has them.
KERNEL_DEPTH_FRACTIONS = (0.0, 0.5, 1.0)
# Keywords that belong to the study or the solver, not to the shared settings.
_STUDY_ONLY = ("width", "depth", "seeds", "progress", "throw", "X_test", "y_test")


def cell_seed(seed: int, width: int, depth: int) -> int:
    """The seed of the networks at (N, L): an independent stream per cell (NumPy's
    SeedSequence), so no two cells share an initialisation."""
    return int(np.random.SeedSequence([seed, width, depth]).generate_state(1)[0] >> 1)


def _layers(depth: int) -> list[int]:
    """0-based layer indices of the kernel depth fractions at depth L (ℓ − 1 = τL, rounded)."""
    return [int(round(f * depth)) for f in KERNEL_DEPTH_FRACTIONS]


def extract(result, quantity: str, depth: int) -> np.ndarray:
    """A quantity of a simulation (seeds first) or solution as (..., T+1, elements).

    ``"kernels"`` stacks Φˡ(t,t) and Gˡ(t,t) at depth fractions (ℓ − 1)/L = 0, ½, 1.
    """
    if quantity == "kernels":
        parts = []
        for name in ("phi_kernel", "g_kernel"):
            k = np.asarray(getattr(result, name))  # (..., L+1, T+1, P, P)
            for layer in _layers(depth):
                parts.append(k[..., layer, :, :, :])
        x = np.stack(parts, axis=-3)  # (..., T+1, 6, P, P)
    else:
        x = getattr(result, quantity)
        if x is None:
            raise ValueError(f"quantity {quantity!r} needs a test set (`X_test`, `y_test`)")
        x = np.asarray(x)
    if quantity in ("loss", "test_loss"):
        return x[..., None].astype(np.float64)
    if quantity == "predictions":
        return x.astype(np.float64)
    if quantity == "ntk":
        return x.reshape(*x.shape[:-2], -1).astype(np.float64)
    return x.reshape(*x.shape[:-3], -1).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class RateFit(Saveable):
    """A power law ``y ≈ c·x^exponent`` fitted on a log–log scale.

    Attributes:
        exponent: the fitted exponent.
        interval: its 95% interval (bootstrap over seeds, or from the regression's
            t-distribution for deterministic data).
        theory: the exponent SPEC §7 predicts.
        x: (n,) the abscissae (widths or depths).
        y: (n, groups) the fitted values, one column per group (depth for a width fit).
        yerr: same shape, their standard errors.
        intercepts: (groups,) log c per group.
        quantity: what was fitted.
        kind: what was fitted ("width", "depth", "dmft-depth").
        correction: d of the next-order term ``d/x`` in the log (0 when not fitted).

    Returned by ``fit_width_rate`` and ``fit_depth_rate``; ``consistent`` says whether
    ``theory`` lies in ``interval``, ``curve(x)`` evaluates the law.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> fit = dmft.fit_width_rate(study, "ntk")
        >>> fit.kind, fit.theory, np.round(fit.x).tolist(), fit.y.shape  # a column per depth
        ('width', -1.0, [16.0, 32.0], (2, 2))
        >>> fit.curve([16, 32, 64]).shape
        (3,)
    """

    exponent: float
    interval: tuple
    theory: float
    x: np.ndarray
    y: np.ndarray
    yerr: np.ndarray
    intercepts: np.ndarray
    quantity: str
    kind: str
    correction: float = 0.0

    def curve(self, x, group: int = 0):
        """The fitted law at ``x``: ``exp(c + p log x + d/x)`` (d = 0 without a correction)."""
        x = np.asarray(x, float)
        return np.exp(self.intercepts[group] + self.exponent * np.log(x) + self.correction / x)

    @property
    def consistent(self) -> bool:
        """Whether the theory exponent lies inside the 95% interval."""
        return self.interval[0] <= self.theory <= self.interval[1]

    def __str__(self):
        lo, hi = self.interval
        return (
            f"{self.kind} exponent of {self.quantity}: {self.exponent:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (theory {self.theory:+.0f})"
        )


@dataclasses.dataclass(frozen=True)
class JointFit(Saveable):
    """``E[q_{N,L}] − q_{∞,∞} ≈ a/N + b/L`` (or another sum of ``terms``), fitted per element
    by weighted least squares.

    Attributes:
        a: (elements,) or (T+1, elements) coefficients of 1/N.
        b: (elements,) or (T+1, elements) coefficients of 1/L.
        terms: the model's terms.
        coefficients: {term: coefficients} for the model's terms.
        rms_a: RMS over elements of a (the size of the 1/N effect).
        rms_b: RMS over elements of b (the size of the 1/L effect).
        residuals: (widths, depths) RMS over elements of the standardized residuals
            ``(observed − model)/standard error``; about 1 where the model explains the grid.
        chi2: the weighted residual sum of squares; ``chi2/dof`` near 1 means the model
            explains the grid to within noise.
        dof: the degrees of freedom of ``chi2``.
        p_value: probability of a chi² at least this large if the model were exact.
        observed: (widths, depths) RMS over elements of the observed deviation.
        model: (widths, depths) RMS over elements of the model.
        noise: (widths, depths) RMS over elements of the standard error.
        quantity: what was fitted.
        widths: the widths used (those at or above ``min_width``).
        depths: the depths used (those at or above ``min_depth``).

    Returned by ``fit_joint``.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> joint = dmft.fit_joint(study, "predictions")
        >>> joint.a.shape, joint.b.shape, joint.residuals.shape  # P = 3 elements, 2×2 grid
        ((3,), (3,), (2, 2))
        >>> joint.dof  # 4 cells × 3 elements − 2 coefficients × 3 elements
        6
    """

    a: np.ndarray
    b: np.ndarray
    residuals: np.ndarray
    chi2: float
    dof: int
    p_value: float
    observed: np.ndarray
    model: np.ndarray
    noise: np.ndarray
    quantity: str
    widths: tuple
    depths: tuple
    terms: tuple = ("1/N", "1/L")
    coefficients: dict = dataclasses.field(default_factory=dict)

    @property
    def rms_a(self) -> float:
        return float(np.sqrt(np.mean(self.a**2)))

    @property
    def rms_b(self) -> float:
        return float(np.sqrt(np.mean(self.b**2)))

    def __str__(self):
        coefs = ", ".join(
            f"RMS[{t}] = {np.sqrt(np.mean(c**2)):.3g}" for t, c in self.coefficients.items()
        )
        return (
            f"joint fit of {self.quantity} by {' + '.join(self.terms)}: {coefs}, "
            f"chi2/dof = {self.chi2:.1f}/{self.dof} = {self.chi2 / max(self.dof, 1):.2f}, "
            f"largest |standardized residual| (RMS per cell) = {np.max(self.residuals):.2f}"
        )


@dataclasses.dataclass(frozen=True)
class ConvergenceStudy(Saveable):
    """Networks over a grid of widths and depths next to their DMFT limits.

    Attributes:
        widths: the grid's widths.
        depths: the grid's depths.
        seeds: networks per grid point.
        quantities: the compared quantities; each is stored as (…, T+1, elements): the loss
            (1 element), the NTK (P² elements), the predictions (P), and "kernels": Φˡ(t,t) and
            Gˡ(t,t) at depth fractions (ℓ − 1)/L = 0, ½, 1 (6P² elements).
        values: {quantity: (widths, depths, seeds, T+1, elements)} the networks.
        reference: {quantity: (depths, T+1, elements)} the DMFT at each depth (N = ∞).
        reference_error: {quantity: (depths, T+1, elements)} its Monte Carlo standard error
            (loss and test loss only; zeros elsewhere and for exact solves).
        limit: {quantity: (T+1, elements)} the DMFT at L = ∞, or None when not solved.
        limit_error: {quantity: (T+1, elements)} the extrapolation's error estimate (loss
            only; zeros elsewhere), or None.
        limit_depths: the depth ladder of the L = ∞ solve (empty when not solved).
        times: (T+1,) the time of each point.
        settings: the shared settings.
        timings: seconds spent in each part ("simulate", "solve", "limit") and per point.
        cached: how many points came from the cache.

    Returned by ``convergence_study``; ``study.save(path)`` writes it and
    ``load_study`` reads it back. ``msd``, ``bias`` and ``dmft_depth_error`` give the
    deviations over time that the fits summarise.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> study.values["ntk"].shape  # (widths, depths, seeds, T+1, P²)
        (2, 2, 4, 4, 9)
        >>> study.reference["ntk"].shape, study.limit["ntk"].shape
        ((2, 4, 9), (4, 9))
        >>> study.msd("loss")[0].shape, study.bias("loss", against="limit")[0].shape
        ((2, 2, 4), (2, 2, 4))
    """

    widths: tuple
    depths: tuple
    seeds: int
    quantities: tuple
    values: dict
    reference: dict
    reference_error: dict
    limit: dict | None
    limit_error: dict | None
    limit_depths: tuple
    times: np.ndarray
    settings: dict
    timings: dict
    cached: int = 0

    # ----- deviations over time -----
    def msd(self, quantity: str = "loss"):
        """(widths, depths, T+1) ``E[(q_N − q_{∞,L})²]``, averaged over elements, and its
        standard error over seeds."""
        d = (self.values[quantity] - self.reference[quantity][None, :, None]) ** 2
        per_seed = d.mean(axis=-1)  # (W, D, S, T+1)
        return per_seed.mean(axis=2), per_seed.std(axis=2, ddof=1) / math.sqrt(self.seeds)

    def bias(self, quantity: str = "loss", against: str = "depth"):
        """(widths, depths, T+1) RMS over elements of ``E[q_{N,L}] − q_∞``, and the RMS of the
        ensemble mean's standard error (the noise level of the first).

        ``against="depth"``: q_∞ is the DMFT at the same depth; ``"limit"``: the DMFT at L = ∞.
        """
        mean, se = self._mean_se(quantity)
        ref = self._ref(quantity, against)
        return np.sqrt(np.mean((mean - ref) ** 2, axis=-1)), np.sqrt(np.mean(se**2, axis=-1))

    def dmft_depth_error(self, quantity: str = "loss"):
        """(depths, T+1) RMS over elements of ``q_{∞,L} − q_{∞,∞}``: the DMFT's own depth error."""
        self._need_limit()
        return np.sqrt(np.mean((self.reference[quantity] - self.limit[quantity]) ** 2, axis=-1))

    def _mean_se(self, quantity):
        v = self.values[quantity]
        return v.mean(axis=2), v.std(axis=2, ddof=1) / math.sqrt(self.seeds)

    def _ref(self, quantity, against):
        if against == "depth":
            return self.reference[quantity][None]
        if against == "limit":
            self._need_limit()
            return self.limit[quantity][None, None]
        raise ValueError(f"`against` must be 'depth' or 'limit', got {against!r}")

    def _need_limit(self):
        if self.limit is None:
            raise ValueError("this study did not solve the L = ∞ limit (run it with limit=True)")

    def __repr__(self):
        return (
            f"ConvergenceStudy(widths={self.widths}, depths={self.depths}, seeds={self.seeds}, "
            f"quantities={self.quantities}, steps={len(self.times) - 1}, "
            f"limit={'solved' if self.limit is not None else 'not solved'}, "
            f"cached points={self.cached})"
        )


def load_study(path) -> ConvergenceStudy:
    """Read a study written by ``study.save(path)`` (or ``dmft.save``).

    Args:
        path: the ``.npz`` file.

    Returns:
        ``ConvergenceStudy``, equal field by field to the one saved.

    Raises:
        ValueError: the file holds another kind of result, or is damaged (see ``dmft.load``).

    Examples:
        >>> import os
        >>> import tempfile
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "study.npz")
        ...     study.save(path)
        ...     again = dmft.load_study(path)
        >>> again.widths, bool(np.array_equal(again.values["ntk"], study.values["ntk"]))
        ((16, 32), True)
    """
    study = load(path)
    if not isinstance(study, ConvergenceStudy):
        raise ValueError(f"{path} holds a {type(study).__name__}, not a ConvergenceStudy")
    return study


def _load_legacy_study(path) -> ConvergenceStudy:
    """A study saved before ``dmft.save`` existed (one ``__meta__`` JSON member)."""
    arrays, meta = read_npz(path)
    if meta.get("kind") != "ConvergenceStudy":
        raise ValueError(f"{path} holds {meta.get('kind')!r}, not a ConvergenceStudy")
    qs = tuple(meta["quantities"])
    has_limit = f"limit/{qs[0]}" in arrays
    try:
        return ConvergenceStudy(
            widths=tuple(meta["widths"]),
            depths=tuple(meta["depths"]),
            seeds=int(meta["seeds"]),
            quantities=qs,
            values={q: arrays[f"values/{q}"] for q in qs},
            reference={q: arrays[f"reference/{q}"] for q in qs},
            reference_error={q: arrays[f"reference_error/{q}"] for q in qs},
            limit={q: arrays[f"limit/{q}"] for q in qs} if has_limit else None,
            limit_error={q: arrays[f"limit_error/{q}"] for q in qs} if has_limit else None,
            limit_depths=tuple(meta["limit_depths"]),
            times=arrays["times"],
            settings=meta["settings"],
            timings=meta["timings"],
            cached=int(meta["cached"]),
        )
    except KeyError as err:
        raise ValueError(f"{path} is missing {err}; it is not a complete study") from err


# ----- running a study -----
def _check_grid(name, values, minimum):
    values = tuple(check_int(name, v, minimum=minimum) for v in np.atleast_1d(values).tolist())
    if not values:
        raise ValueError(f"`{name}` must list at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` must not repeat values, got {values}")
    return tuple(sorted(values))


def convergence_study(
    X,
    y,
    *,
    widths,
    depths,
    seeds: int = 32,
    seed: int = 0,
    quantities=DEFAULT_QUANTITIES,
    limit: bool = True,
    limit_depths=DEFAULT_DEPTHS,
    solver_options: dict | None = None,
    cache_dir=None,
    progress: bool = False,
    X_test=None,
    y_test=None,
    **settings,
) -> ConvergenceStudy:
    """Train networks over ``widths × depths`` and solve their DMFT limits; see the module doc.

    Every point (one simulation, one DMFT solve) is cached in ``cache_dir`` under a hash of its
    settings, the data and the library's code, so rerunning an interrupted study recomputes no
    finished point.

    Args:
        X: training inputs (P, D).
        y: training targets (P,).
        widths: network widths N (at least two for a width fit).
        depths: depths L (at least two for a depth fit).
        seeds: networks per (N, L) (>= 2).
        seed: the study's seed. Every (N, L) gets its own independent stream of networks
            (derived from ``seed``, N and L), so the cells' errors are independent, as the
            fits' intervals and the joint fit's χ² assume.
        quantities: any of "loss", "ntk", "predictions", "kernels", "test_loss".
        limit: also solve the DMFT at L = ∞ (``solve_dmft(depth=math.inf)``), the reference of
            the depth fits.
        limit_depths: the depth ladder of that solve.
        solver_options: extra keywords for ``dmft.solve_dmft`` only (``samples``,
            ``replicas``, ``method``, ``tol``, ...).
        cache_dir: folder of finished points (None: keep nothing).
        progress: show a progress bar over points.
        X_test: optional test inputs (for "test_loss").
        y_test: optional test targets (for "test_loss").
        **settings: keywords shared by ``dmft.simulate`` and ``dmft.solve_dmft``
            (``activation``, ``beta0``, ``gamma0``, ``eta0``, ``steps``, ``dynamics``, ``center``,
            ...).

    Returns:
        ``ConvergenceStudy``.

    Raises:
        ValueError: bad input, before any compilation.
        TypeError: bad input, before any compilation.
        RuntimeError: a DMFT solve did not finish with status "ok", or networks diverged.

    Examples:
        A 2×2 grid of linear networks (4 seeds each, 3 steps) next to the exact DMFT at L = 2
        and 4 and its L = ∞ extrapolation through the same two depths:

        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> study
        ConvergenceStudy(widths=(16, 32), depths=(2, 4), seeds=4,
            quantities=('loss', 'ntk', 'predictions', 'kernels'), steps=3, limit=solved,
            cached points=0)
        >>> study.values["loss"].shape, study.limit["loss"].shape
        ((2, 2, 4, 4, 1), (4, 1))
    """
    X, y = check_data(X, y)
    widths = _check_grid("widths", widths, 1)
    depths = _check_grid("depths", depths, 1)
    seeds = check_int("seeds", seeds, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    quantities = tuple(quantities)
    for q in quantities:
        if q not in QUANTITIES:
            raise ValueError(f"`quantities` entries must be in {QUANTITIES}, got {q!r}")
    if not quantities:
        raise ValueError("`quantities` must name at least one quantity")
    if "test_loss" in quantities and X_test is None:
        raise ValueError("quantity 'test_loss' needs `X_test` and `y_test`")
    for k in _STUDY_ONLY:
        if k in settings:
            raise ValueError(f"`{k}` is set by the study itself; remove it from the settings")
    solver_options = dict(solver_options or {})
    for k in solver_options:
        if k in settings or k in SIMULATOR_ONLY or k in ("depth", "X_test", "y_test"):
            raise ValueError(
                f"`solver_options` must not set {k!r}; put shared settings in **settings"
            )
    if limit:
        limit_depths = check_depth_ladder(limit_depths)
    if "steps" not in settings:
        raise ValueError("`steps` is required")
    test = {} if X_test is None else dict(X_test=X_test, y_test=y_test)
    # validate every setting on the cheapest configuration before anything long runs
    _validate(X, y, widths, depths, settings, solver_options, test)

    cache = Cache(cache_dir)
    base = dict(
        code=code_version(),
        data=array_digest(X, y, *([] if X_test is None else [X_test, y_test])),
        settings=settings,
    )
    timings = {"simulate": 0.0, "solve": 0.0, "limit": 0.0, "points": {}}
    n_points = len(depths) * (1 + len(widths)) + int(limit)
    bar = tqdm(total=n_points, disable=not progress, desc="convergence study")

    def point(kind, extra, compute):
        key = make_key({**base, "kind": kind, **extra})
        hit = cache.get(key)
        if hit is not None:
            arrays, meta = hit
            if tuple(meta.get("quantities", ())) == quantities:
                bar.update(1)
                return arrays, meta
        bar.set_postfix_str(f"{kind} {extra}")
        t0 = time.perf_counter()
        arrays, meta = compute()
        seconds = time.perf_counter() - t0
        meta = {**meta, "seconds": seconds, "quantities": list(quantities), "point": extra}
        cache.put(key, arrays, meta)
        timings["points"][f"{kind} {_point_name(extra)}"] = seconds
        timings[kind] += seconds
        bar.update(1)
        return arrays, meta

    def solve_at(L):
        sol = solve_dmft(X, y, depth=L, **settings, **solver_options, **test, throw=False)
        if sol.status != "ok":
            raise RuntimeError(f"the DMFT solve at depth {L} failed: {sol.status}")
        return _arrays(sol, quantities, L, error=True), {"times": np.asarray(sol.times).tolist()}

    reference = {q: [] for q in quantities}
    reference_error = {q: [] for q in quantities}
    times = None
    for L in depths:
        arrays, meta = point("solve", {"depth": L, **solver_options}, lambda L=L: solve_at(L))
        times = np.asarray(meta["times"])
        for q in quantities:
            reference[q].append(arrays[q])
            reference_error[q].append(arrays[f"{q}/error"])

    lim = lim_err = None
    if limit:

        def solve_limit():
            sol = solve_dmft(
                X,
                y,
                depth=math.inf,
                depths=limit_depths,
                **settings,
                **solver_options,
                **test,
                throw=False,
            )
            if sol.status != "ok":
                raise RuntimeError(f"the DMFT solve at L = ∞ failed: {sol.status}")
            arrays = _arrays(sol, quantities, limit_depths[0], error=False)
            for q in quantities:
                err = np.zeros_like(arrays[q])
                if q == "loss":
                    err[..., 0] = np.asarray(sol.depth_error)
                arrays[f"{q}/error"] = err
            return arrays, {}

        arrays, _ = point("limit", {"depths": list(limit_depths), **solver_options}, solve_limit)
        lim = {q: arrays[q] for q in quantities}
        lim_err = {q: arrays[f"{q}/error"] for q in quantities}

    values = {q: np.empty((len(widths), len(depths)), dtype=object) for q in quantities}
    for j, L in enumerate(depths):
        for i, n in enumerate(widths):

            def run(n=n, L=L):
                res = simulate(
                    X,
                    y,
                    width=n,
                    depth=L,
                    seeds=seeds,
                    seed=cell_seed(seed, n, L),
                    **settings,
                    **test,
                    throw=False,
                )
                if res.diverged:
                    raise RuntimeError(f"networks at N = {n}, L = {L}: {res.status}")
                return _arrays(res, quantities, L, error=False), {}

            extra = {"width": n, "depth": L, "seeds": seeds, "seed": cell_seed(seed, n, L)}
            arrays, _ = point("simulate", extra, run)
            for q in quantities:
                values[q][i, j] = arrays[q]
    bar.close()
    return ConvergenceStudy(
        widths=widths,
        depths=depths,
        seeds=seeds,
        quantities=quantities,
        values={q: np.stack([np.stack(list(row)) for row in values[q]]) for q in quantities},
        reference={q: np.stack(reference[q]) for q in quantities},
        reference_error={q: np.stack(reference_error[q]) for q in quantities},
        limit=lim,
        limit_error=lim_err,
        limit_depths=tuple(limit_depths) if limit else (),
        times=times,
        settings={k: _jsonable(v) for k, v in settings.items()},
        timings=timings,
        cached=cache.hits,
    )


def _point_name(extra: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in extra.items())


def _jsonable(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return repr(v)


def _arrays(result, quantities, depth, *, error):
    out = {}
    for q in quantities:
        out[q] = extract(result, q, depth)
        if error:
            err = np.zeros_like(out[q])
            if q in ("loss", "test_loss"):
                e = getattr(result, f"{q}_error", None)
                if e is not None:
                    err[..., 0] = np.asarray(e)
            out[f"{q}/error"] = err
    return out


def _validate(X, y, widths, depths, settings, solver_options, test):
    """Run both entry points' argument checks on the smallest grid point; nothing is compiled."""
    with checking_only():
        simulate(X, y, width=widths[0], depth=depths[0], seeds=2, **settings, **test)
        solve_dmft(X, y, depth=depths[0], **settings, **solver_options, **test)


# ----- fits -----
def _time_summary(x, time):
    """Reduce the last (time) axis: "mean" over t = 1 … T, "final", or one step index."""
    if time == "mean":
        return x[..., 1:].mean(axis=-1)
    if time == "final":
        return x[..., -1]
    if isinstance(time, (int, np.integer)):
        return x[..., int(time)]
    raise ValueError(f"`time` must be 'mean', 'final' or a step index, got {time!r}")


def _boot_weights(rng, n_boot, seeds):
    """(n_boot, seeds) resampling weights that average a bootstrap sample of the seeds."""
    idx = rng.integers(0, seeds, size=(n_boot, seeds))
    w = np.zeros((n_boot, seeds))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0 / seeds)
    return w


def _pooled_slope(x, y):
    """Least-squares slope of y (n, groups[, boot]) on x (n,) with one intercept per group."""
    xc = x - x.mean()
    yc = y - y.mean(axis=0, keepdims=True)
    slope = np.tensordot(xc, yc, axes=(0, 0)).sum(axis=0) / (xc @ xc * y.shape[1])
    intercepts = y.mean(axis=0) - slope * x.mean()
    return slope, intercepts


def extrapolate_width(results, field: str = "loss"):
    """Extrapolate ensembles at several widths to N = ∞: the intercept of ``E[q_N] = q_∞ + a/N``.

    For every element of ``field`` (every step, and every data pair for the NTK) the ensemble
    means are fitted by weighted least squares on 1/N (each residual divided by that mean's
    standard error), and the intercept is returned with its standard error. This is the
    finite-width correction of SPEC §7 (the ensemble mean is biased by O(1/N)); use it to
    compare networks with ``dmft.solve_dmft`` at the same depth.

    Args:
        results: ``dmft.SimulationResult`` objects at two or more distinct widths (the
            same depth and settings), each with at least two seeds.
        field: a per-seed field of the results ("loss", "ntk", "predictions", ...).

    Returns:
        ``(mean, stderr)``: arrays of the field's per-run shape, e.g. (steps+1,) for the loss.
        Elements that do not vary across seeds (the centred loss at t = 0) get the mean of the
        widths' values and zero error.

    Raises:
        ValueError: fewer than two distinct widths, or an ensemble with fewer than two seeds.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> runs = [dmft.simulate(X, y, width=n, depth=2, activation="linear", steps=3, seeds=4,
        ...                       center=True) for n in (16, 32)]
        >>> mean, se = dmft.extrapolate_width(runs)
        >>> mean.shape, se.shape
        ((4,), (4,))
        >>> float(mean[0]), float(se[0])  # the centred loss at t = 0 is Σ y²/(2P) exactly
        (0.5, 0.0)
        >>> dmft.extrapolate_width(runs[:1])
        Traceback (most recent call last):
            ...
        ValueError: `results` must hold ensembles at two or more distinct widths, got widths [16.0]
    """
    results = list(results)
    widths = np.array([r.config.get("width") for r in results], dtype=float)
    if len(set(widths.tolist())) < 2:
        raise ValueError(
            f"`results` must hold ensembles at two or more distinct widths, got widths {widths.tolist()}"
        )
    seeds = [np.shape(getattr(r, field))[0] for r in results]
    if min(seeds) < 2:
        raise ValueError(
            f"every ensemble needs at least 2 seeds for a standard error, got seeds {seeds}"
        )
    means = np.stack([r.mean(field) for r in results])
    ses = np.stack([r.stderr(field) for r in results])
    return inverse_width_intercept(widths, means, ses)


def inverse_width_intercept(widths, means, ses):
    """The array form of ``extrapolate_width``: ``means``, ``ses`` of shape (widths, ...)."""
    widths = np.asarray(widths, dtype=float)
    means, ses = np.asarray(means, dtype=float), np.asarray(ses, dtype=float)
    shape = means.shape[1:]
    means, ses = means.reshape(len(widths), -1), ses.reshape(len(widths), -1)
    A = np.stack([np.ones_like(widths), 1.0 / widths], axis=1)
    out = np.empty(means.shape[1])
    err = np.zeros(means.shape[1])
    for k in range(means.shape[1]):
        if np.all(ses[:, k] == 0):
            out[k] = means[:, k].mean()
            continue
        w = 1.0 / np.maximum(ses[:, k], ses[:, k].max() * 1e-12)
        Aw = A * w[:, None]
        coef, *_ = np.linalg.lstsq(Aw, means[:, k] * w, rcond=None)
        out[k] = coef[0]
        err[k] = math.sqrt(np.linalg.inv(Aw.T @ Aw)[0, 0])
    return out.reshape(shape), err.reshape(shape)


def fit_width_rate(
    study: ConvergenceStudy,
    quantity: str = "loss",
    *,
    depths=None,
    min_width: int = 1,
    time="mean",
    n_boot: int = 2000,
    seed: int = 0,
) -> RateFit:
    """Exponent of ``E[(q_N − q_{∞,L})²]`` in N (theory −1), shared by the chosen depths.

    The per-seed squared deviation (averaged over elements and over ``time``) is averaged over
    seeds in each cell; ``log msd = c_L + p log N`` is fitted by least squares with one
    intercept per depth. The 95% interval resamples the seeds of every cell (bootstrap).
    SPEC §7: fluctuations of one network are O(N^{−1/2}), so ``E[(q_N − q_∞)²] ∝ 1/N``.

    Args:
        study: a ``ConvergenceStudy`` with at least two widths.
        quantity: one of the study's ``quantities``.
        depths: the depths to use (default: all of the study's).
        min_width: drop widths below this.
        time: how the deviation is summarised over training time: "mean" over t = 1 … T,
            "final", or one step index.
        n_boot: bootstrap replicates.
        seed: their seed.

    Returns:
        ``RateFit`` of kind "width" with theory −1; ``y`` is the (widths, depths) msd.

    Raises:
        ValueError: fewer than two widths >= ``min_width`` or no depth, or a bad ``time``.
        KeyError: a quantity the study did not record.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> fit = dmft.fit_width_rate(study, "loss")
        >>> print(fit)  # doctest: +ELLIPSIS
        width exponent of loss: ... (theory -1)
        >>> fit.y.shape, fit.yerr.shape  # (widths, depths)
        ((2, 2), (2, 2))
    """
    rows = [i for i, n in enumerate(study.widths) if n >= min_width]
    cols = [j for j, L in enumerate(study.depths) if depths is None or L in depths]
    if len(rows) < 2 or not cols:
        raise ValueError("a width fit needs at least two widths >= `min_width` and one depth")
    d = (study.values[quantity] - study.reference[quantity][None, :, None]) ** 2
    per_seed = _time_summary(d.mean(axis=-1), time)[np.ix_(rows, cols)]  # (W, D, S)
    x = np.log(np.asarray(study.widths, float)[rows])
    msd = per_seed.mean(axis=-1)
    slope, icpt = _pooled_slope(x, np.log(msd))
    w = _boot_weights(np.random.default_rng(seed), n_boot, study.seeds)
    rng = np.random.default_rng(seed + 1)  # cells resample their seeds independently
    boot = np.empty(per_seed.shape[:2] + (n_boot,))
    for i in range(boot.shape[0]):
        for j in range(boot.shape[1]):
            boot[i, j] = w[rng.permutation(n_boot)] @ per_seed[i, j]
    bslope, _ = _pooled_slope(x, np.log(boot))
    lo, hi = np.percentile(bslope, [2.5, 97.5])
    se = per_seed.std(axis=-1, ddof=1) / math.sqrt(study.seeds)
    return RateFit(
        float(slope),
        (float(lo), float(hi)),
        -1.0,
        np.exp(x),
        msd,
        se,
        icpt,
        quantity,
        "width",
    )


def _sq_bias_boot(v, ref, time, w):
    """Noise-corrected squared bias, averaged over elements and ``time``: point value and
    bootstrap replicates. v: (S, T+1, E); ref: (T+1, E); w: (B, S) or None."""
    S = v.shape[0]

    def est(mean, second):
        var_of_mean = np.maximum(second - mean**2, 0.0) / (S - 1)  # unbiased var / S
        sq = (mean - ref) ** 2 - var_of_mean
        return _time_summary(sq.mean(axis=-1), time)

    mean = v.mean(axis=0)
    point = est(mean, (v**2).mean(axis=0))
    if w is None:
        return point, None
    flat = v.reshape(S, -1)
    bm = (w @ flat).reshape(w.shape[0], *v.shape[1:])
    b2 = (w @ flat**2).reshape(w.shape[0], *v.shape[1:])
    return point, est(bm, b2)


def _depth_fit(x, y, correction):
    """Fit y = c + p·x (+ d·e^{−x} with ``correction``) for x = log L; y is (n,) or (n, B).
    Returns p, c, d (each scalar or (B,)) and the residual degrees of freedom."""
    cols = [np.ones_like(x), x] + ([np.exp(-x)] if correction else [])
    design = np.stack(cols, axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    d = coef[2] if correction else np.zeros_like(coef[0])
    return coef[1], coef[0], d, len(x) - design.shape[1], design


def fit_depth_rate(
    study: ConvergenceStudy,
    quantity: str = "loss",
    *,
    width=None,
    dmft: bool = False,
    min_depth: int = 1,
    correction: bool = False,
    time="mean",
    n_boot: int = 2000,
    seed: int = 0,
) -> RateFit:
    """Exponent in L of ``|E[q_{N,L}] − q_{∞,∞}|`` at one width (default: the largest), or of
    the DMFT's own ``|q_{∞,L} − q_{∞,∞}|`` with ``dmft=True``; theory −1 for both.

    The deviation is the RMS over elements and over ``time`` of the mean's offset, with the
    ensemble's sampling variance subtracted (so noise does not masquerade as bias). The fit is
    ``log|Δ| = c + p log L``, or with ``correction=True`` ``c + p log L + d/L``: the next order
    of ``Δ = b L^p (1 + d/L + …)``, so that p is the asymptotic exponent even where shallow
    depths are not yet in the ``1/L`` regime (otherwise raise ``min_depth``). The 95% interval
    resamples seeds (bootstrap), so it covers the ensemble's noise, not a misfit of the law; for
    the deterministic DMFT it is the regression's (which does reflect the misfit), and infinite
    when there are no more depths than parameters. SPEC §5 and §7: ``|q_{∞,L} − q_{∞,∞}| ∝ 1/L``.

    Args:
        study: a ``ConvergenceStudy`` solved with ``limit=True``.
        quantity: one of the study's ``quantities``.
        width: the width of the networks (one of ``study.widths``; default the largest).
        dmft: fit the DMFT's own depth error instead of the networks'.
        min_depth: drop depths below this.
        correction: also fit the next-order term d/L (needs three depths).
        time: how the deviation is summarised over training time: "mean" over t = 1 … T,
            "final", or one step index.
        n_boot: bootstrap replicates.
        seed: their seed.

    Returns:
        ``RateFit`` of kind "depth" or "dmft-depth" with theory −1; ``y`` is (depths, 1).

    Raises:
        ValueError: the study has no L = ∞ solve, too few depths >= ``min_depth``, ``width``
            not in the study, or (networks) a bias not above the ensemble's noise at some depth.

    Examples:
        Here the L = ∞ reference is the extrapolation through L = 2 and 4 themselves, linear in
        1/L, so the DMFT's own depth error of the NTK is exactly ∝ 1/L:

        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> fit = dmft.fit_depth_rate(study, "ntk", dmft=True)
        >>> fit.kind, np.round(fit.x).tolist(), round(fit.exponent, 6)
        ('dmft-depth', [2.0, 4.0], -1.0)
    """
    study._need_limit()
    cols = [j for j, L in enumerate(study.depths) if L >= min_depth]
    if len(cols) < 2 + int(correction):
        raise ValueError(f"a depth fit needs at least {2 + int(correction)} depths >= `min_depth`")
    x = np.log(np.asarray(study.depths, float)[cols])
    ref = study.limit[quantity]
    if dmft:
        dev = (study.reference[quantity][cols] - ref[None]) ** 2
        y = 0.5 * np.log(_time_summary(dev.mean(axis=-1), time))
        p, c, d, dof, design = _depth_fit(x, y, correction)
        if dof > 0:
            resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
            cov = np.linalg.inv(design.T @ design) * (resid @ resid) / dof
            half = stats.t.ppf(0.975, dof) * math.sqrt(cov[1, 1])
        else:
            half = np.inf
        return RateFit(
            float(p),
            (float(p - half), float(p + half)),
            -1.0,
            np.exp(x),
            np.exp(y)[:, None],
            np.zeros((len(x), 1)),
            np.array([c]),
            quantity,
            "dmft-depth",
            float(d),
        )
    i = len(study.widths) - 1 if width is None else study.widths.index(width)
    w = _boot_weights(np.random.default_rng(seed), n_boot, study.seeds)
    rng = np.random.default_rng(seed + 1)
    point, boot = [], []
    for j in cols:
        pt, b = _sq_bias_boot(study.values[quantity][i, j], ref, time, w[rng.permutation(n_boot)])
        point.append(pt)
        boot.append(b)
    point, boot = np.array(point), np.array(boot)  # (D,), (D, B)
    if np.any(point <= 0):
        unresolved = [study.depths[j] for j, v in zip(cols, point, strict=True) if v <= 0]
        raise ValueError(
            f"the bias of {quantity!r} at N = {study.widths[i]} is below the ensemble's noise at "
            f"L = {unresolved}; run more `seeds` (the noise falls as seeds^-1/2), or leave those "
            "depths out of the fit (a larger `min_depth` drops the shallow ones)"
        )
    y = 0.5 * np.log(point)
    p, c, d, _, _ = _depth_fit(x, y, correction)
    # A replicate whose bias at some depth is not above its noise has no finite exponent: the
    # data cannot exclude a bias of zero there, i.e. an exponent of −∞ (deep) or +∞ (shallow).
    valid = boot > 0
    logb = 0.5 * np.log(np.where(valid, boot, 1.0))
    bp = _depth_fit(x, logb, correction)[0]
    deep = np.arange(len(cols))[:, None] >= len(cols) / 2
    bp = np.where((~valid & deep).any(axis=0), -np.inf, bp)
    bp = np.where((~valid & ~deep).any(axis=0), np.inf, bp)
    lo, hi = np.percentile(bp, [2.5, 97.5], method="inverted_cdf")
    return RateFit(
        float(p),
        (float(lo), float(hi)),
        -1.0,
        np.exp(x),
        np.exp(y)[:, None],
        (np.exp(y) * np.nanstd(np.where(valid, logb, np.nan), axis=1))[:, None],
        np.array([c]),
        quantity,
        "depth",
        float(d),
    )


JOINT_TERMS = {
    "1/N": lambda n, L: 1.0 / n,
    "1/L": lambda n, L: 1.0 / L,
    "1/N^2": lambda n, L: 1.0 / n**2,
    "1/L^2": lambda n, L: 1.0 / L**2,
    "1/(NL)": lambda n, L: 1.0 / (n * L),
}


def fit_joint(
    study: ConvergenceStudy,
    quantity: str = "loss",
    *,
    time="mean",
    terms=("1/N", "1/L"),
    min_width: int = 1,
    min_depth: int = 1,
) -> JointFit:
    """Fit ``E[q_{N,L}] − q_{∞,∞} = a/N + b/L`` (or the sum of ``terms``, any of
    ``JOINT_TERMS``: "1/N", "1/L", "1/N^2", "1/L^2", "1/(NL)") for every element (and time,
    if ``time`` is "all") by least squares weighted by the ensemble mean's standard error
    (combined in quadrature with the L = ∞ solve's error estimate), and report how well it
    explains the grid (SPEC §7: ``E[q_{N,L}] − q_∞ ≈ a/N + b/L``).

    Args:
        study: a ``ConvergenceStudy`` solved with ``limit=True``.
        quantity: one of the study's ``quantities``.
        time: "mean" over t = 1 … T, "final", one step index, or "all" (one fit per step).
        terms: the model's terms.
        min_width: drop grid points below this width.
        min_depth: drop grid points below this depth.

    Returns:
        ``JointFit``.

    Raises:
        ValueError: the study has no L = ∞ solve, an unknown term, or no more grid points
            than terms.

    Examples:
        >>> import numpy as np
        >>> import dmft
        >>> X, y = np.eye(3, 4) * 2.0, np.array([1.0, -1.0, 1.0])
        >>> study = dmft.convergence_study(X, y, widths=(16, 32), depths=(2, 4), seeds=4,
        ...     limit_depths=(2, 4), steps=3, activation="linear", center=True)
        >>> joint = dmft.fit_joint(study, "loss")
        >>> print(joint)  # doctest: +ELLIPSIS
        joint fit of loss by 1/N + 1/L: RMS[1/N] = ..., chi2/dof = .../2 = ...
        >>> dmft.fit_joint(study, "loss", time="all").a.shape  # (T+1, elements)
        (4, 1)
    """
    study._need_limit()
    for t in terms:
        if t not in JOINT_TERMS:
            raise ValueError(f"`terms` entries must be in {tuple(JOINT_TERMS)}, got {t!r}")
    rows = [i for i, n in enumerate(study.widths) if n >= min_width]
    cols = [j for j, L in enumerate(study.depths) if L >= min_depth]
    if len(rows) * len(cols) <= len(terms):
        raise ValueError("the joint fit needs more grid points than terms")
    mean, se = study._mean_se(quantity)  # (W, D, T+1, E)
    ref = study.limit[quantity]
    err = np.broadcast_to(study.limit_error[quantity], mean.shape)

    def pick(a):
        a = a[np.ix_(rows, cols)]
        return a if time == "all" else _time_summary(np.moveaxis(a, -2, -1), time)

    d = pick(mean - ref[None, None])  # (W, D, E) or (W, D, T+1, E)
    s = np.sqrt(pick(se) ** 2 + pick(err) ** 2)
    s = np.maximum(s, 1e-12 * np.max(np.abs(d)) + 1e-300)
    W, D = d.shape[:2]
    n = np.asarray(study.widths, float)[rows][:, None]
    L = np.asarray(study.depths, float)[cols][None, :]
    design = np.stack(
        [np.broadcast_to(JOINT_TERMS[t](n, L), (W, D)) for t in terms], axis=-1
    ).reshape(W * D, len(terms))
    y = d.reshape(W * D, -1)
    sw = s.reshape(W * D, -1)
    coef = np.empty((len(terms), y.shape[1]))
    for e in range(y.shape[1]):  # weighted least squares, one element at a time
        a = design / sw[:, e : e + 1]
        coef[:, e] = np.linalg.lstsq(a, y[:, e] / sw[:, e], rcond=None)[0]
    model = design @ coef
    z = (y - model) / sw
    chi2 = float(np.sum(z**2))
    dof = int(z.size - coef.size)
    shape = d.shape[2:]
    coefficients = {t: coef[k].reshape(shape) for k, t in enumerate(terms)}
    zero = np.zeros(shape)
    return JointFit(
        a=coefficients.get("1/N", zero),
        b=coefficients.get("1/L", zero),
        residuals=np.sqrt(np.mean(z**2, axis=1)).reshape(W, D),
        chi2=chi2,
        dof=dof,
        p_value=float(stats.chi2.sf(chi2, dof)) if dof > 0 else float("nan"),
        observed=np.sqrt(np.mean(y**2, axis=1)).reshape(W, D),
        model=np.sqrt(np.mean(model**2, axis=1)).reshape(W, D),
        noise=np.sqrt(np.mean(sw**2, axis=1)).reshape(W, D),
        quantity=quantity,
        widths=tuple(np.asarray(study.widths)[rows].tolist()),
        depths=tuple(np.asarray(study.depths)[cols].tolist()),
        terms=tuple(terms),
        coefficients=coefficients,
    )


def summarize(study: ConvergenceStudy, *, time="mean") -> str:
    """A plain-text table of every fit for every quantity of the study."""
    lines = [repr(study)]

    def attempt(fn):
        try:
            return str(fn())
        except ValueError as err:
            return f"n/a ({err})"

    for q in study.quantities:
        lines.append(f"[{q}]")
        if len(study.widths) >= 2:
            lines.append("  " + attempt(lambda q=q: fit_width_rate(study, q, time=time)))
        if study.limit is not None and len(study.depths) >= 2:
            variants = [{}] + ([{"correction": True}] if len(study.depths) >= 3 else [])
            for kw in variants:
                note = ", with a 1/L correction" if kw else ""
                lines.append(
                    "  "
                    + attempt(lambda q=q, kw=kw: fit_depth_rate(study, q, time=time, **kw))
                    + f" at N = {study.widths[-1]}{note}"
                )
                lines.append(
                    "  "
                    + attempt(
                        lambda q=q, kw=kw: fit_depth_rate(study, q, dmft=True, time=time, **kw)
                    )
                    + note
                )
            for terms in (("1/N", "1/L"), ("1/N", "1/L", "1/L^2")):
                lines.append(
                    "  " + attempt(lambda q=q, t=terms: fit_joint(study, q, time=time, terms=t))
                )
    t = study.timings
    lines.append(
        f"time: simulate {t['simulate']:.1f} s, DMFT {t['solve']:.1f} s, L = ∞ {t['limit']:.1f} s "
        f"(cached points: {study.cached})"
    )
    return "\n".join(lines)
