"""Progress bars: shown when asked (every time step counted), quiet by default off a terminal
and inside jit/vmap, and never changing the numbers."""

import math

import jax
import numpy as np
import pytest

import dmft
from dmft import progress

X = np.eye(2)
Y = np.array([1.0, -1.0])


def _counts(monkeypatch):
    """Record (steps done, total) of every bar when it closes."""
    seen = []
    real = progress.tqdm.close

    def close(self):
        if not getattr(self, "_recorded", False):  # close runs again on garbage collection
            self._recorded = True
            seen.append((self.n, self.total, self.disable))
        real(self)

    monkeypatch.setattr(progress.tqdm, "close", close)
    return seen


def test_solve_bar_counts_every_time_step_of_every_march(monkeypatch, capsys):
    seen = _counts(monkeypatch)
    quiet = dmft.solve_dmft(X, Y, depth=2, activation="relu", eta0=0.1, steps=4, samples=256,
                            replicas=3, throw=False, progress=False)  # fmt: skip
    shown = dmft.solve_dmft(X, Y, depth=2, activation="relu", eta0=0.1, steps=4, samples=256,
                            replicas=3, throw=False, progress=True)  # fmt: skip
    # the bar changes nothing but the compiled program: its host callback sits in the loop, and
    # XLA optimizes this short march differently around it (the two programs' op counts
    # differ), so the two agree to rounding (3e-16 measured), as a vmapped solve agrees with
    # separate ones
    np.testing.assert_allclose(quiet.loss, shown.loss, rtol=1e-12)
    assert seen[-1] == (5 * 3, 5 * 3, False)  # (steps + 1) × replicas
    err = capsys.readouterr().err
    assert "DMFT relu L=2" in err and "MC rel. error" in err
    # the depth ladder with gradient flow of order 2: (T+1 + 2T+1) per depth
    dmft.solve_dmft(X, Y, depth=math.inf, depths=(2, 4), activation="linear", dynamics="flow",
                    t_max=0.4, steps=3, progress=True)  # fmt: skip
    assert seen[-1] == (2 * (4 + 7), 2 * (4 + 7), False)
    assert "L=∞" in capsys.readouterr().err


def test_simulate_bar_counts_steps_per_chunk(monkeypatch, capsys):
    seen = _counts(monkeypatch)
    dmft.simulate(X, Y, width=16, depth=2, eta0=0.1, steps=3, seeds=4, chunk_size=2,
                  progress=True)  # fmt: skip
    assert seen[-1] == (2 * 3, 2 * 3, False)  # two chunks of seeds, three steps each
    assert "networks N=16 L=2" in capsys.readouterr().err


def test_quiet_off_a_terminal_and_inside_vmap(monkeypatch, capsys):
    seen = _counts(monkeypatch)
    dmft.solve_dmft(X, Y, depth=2, activation="linear", eta0=0.1, steps=3)  # progress=None
    assert seen[-1][2] is True and capsys.readouterr().err == ""
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert progress.enabled(None)
    monkeypatch.setenv("CI", "true")
    assert not progress.enabled(None)

    def final_loss(eta0):
        sol = dmft.solve_dmft(X, Y, depth=2, activation="linear", eta0=eta0, steps=3,
                              throw=False, progress=True)  # fmt: skip
        return sol.loss[-1]

    etas = np.array([0.05, 0.1])
    swept = jax.vmap(final_loss)(etas)
    np.testing.assert_allclose(swept, [final_loss(e) for e in etas], rtol=1e-12)
    with pytest.raises(TypeError, match="`progress` must be None, True or False"):
        progress.enabled("yes")
