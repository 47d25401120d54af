"""The command line: every subcommand's --help, `solve`/`simulate`/`show` end to end in a
subprocess (TOML file plus overriding flags, result and figure written), exit statuses."""

import os
import subprocess
import sys

import numpy as np
import pytest

import dmft
from dmft import cli

ENV = {**os.environ, "MPLBACKEND": "Agg", "JAX_ENABLE_X64": "1"}  # as conftest does here


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dmft.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _flags(group):
    return ["--" + name.replace("_", "-") for name, _, _ in group]


HELP_WORDS = {
    "solve": _flags(cli.SHARED_FLAGS + cli.SOLVE_FLAGS)
    + ["--config", "--out", "--figure", "--quiet", "--points", "--data", "[settings]", "Exit"],
    "simulate": _flags(cli.SHARED_FLAGS + cli.SIMULATE_FLAGS)
    + ["--config", "--out", "--figure", "--quiet", "--points", "--data", "[settings]", "Exit"],
    "show": ["file", "exit status"],
    "study": ["config", "--cache", "--out", "--figure", "--quiet", "[settings]", "[study]"],
    "demo": ["--out"],
}


@pytest.mark.parametrize("command", sorted(HELP_WORDS))
def test_every_subcommand_has_complete_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for word in HELP_WORDS[command]:
        assert word in text, (command, word)
    top = cli.build_parser().format_help()
    assert command in top


SOLVE_TOML = """
[data]
points = 3
dim = 5
seed = 4

[settings]
depth = 3
activation = "linear"
eta0 = 0.5          # overridden by --eta0 below
steps = 6
gamma0 = 1.5

[output]
out = "runs/solution.npz"
figure = "runs/solution.png"
"""


def test_solve_show_and_simulate_end_to_end(tmp_path):
    (tmp_path / "s.toml").write_text(SOLVE_TOML)
    done = _run(["solve", "--config", "s.toml", "--eta0", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "status: ok" in done.stdout and "final loss" in done.stdout
    assert (tmp_path / "runs" / "solution.png").stat().st_size > 1000
    saved = dmft.load(tmp_path / "runs" / "solution.npz")
    X, y = cli.random_data(3, 5, 4)
    direct = dmft.solve_dmft(X, y, depth=3, activation="linear", eta0=0.1, steps=6, gamma0=1.5)
    np.testing.assert_array_equal(saved.loss, np.asarray(direct.loss))
    np.testing.assert_array_equal(saved.ntk, np.asarray(direct.ntk))
    assert saved.config == direct.config  # the flag won over the file's eta0 = 0.5

    shown = _run(["show", "runs/solution.npz"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "linear-exact" in shown.stdout and "eta0=0.1" in shown.stdout
    assert "jax " in shown.stdout and "wall_seconds" in shown.stdout

    np.savez(tmp_path / "data.npz", X=X, y=y)
    sim = _run(
        ["simulate", "--data", "data.npz", "--width", "32", "--depth", "2", "--eta0", "0.1",
         "--steps", "3", "--seeds", "3", "--center", "--out", "sim.npz", "--quiet"],
        tmp_path,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert "mean ± s.e. over seeds" in sim.stdout
    res = dmft.load(tmp_path / "sim.npz")
    direct = dmft.simulate(X, y, width=32, depth=2, eta0=0.1, steps=3, seeds=3, center=True)
    np.testing.assert_allclose(res.loss, direct.loss, rtol=1e-6)
    assert res.config == direct.config


def test_exit_status_says_what_went_wrong(tmp_path, capsys):
    # a diverging run: exit 1, the result is still written, with its status
    code = cli.main(
        ["solve", "--depth", "2", "--steps", "4", "--eta0", "50", "--activation", "linear",
         "--out", str(tmp_path / "bad.npz")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1 and "diverged" in out and "lower `eta0`" in out
    assert dmft.load(tmp_path / "bad.npz").diverged_step >= 0
    # bad input: exit 2 with the library's message naming the argument
    assert cli.main(["solve", "--depth", "0", "--steps", "3"]) == 2
    assert "`depth` must be an int >= 1" in capsys.readouterr().err
    assert cli.main(["solve", "--steps", "3"]) == 2
    assert "needs --depth" in capsys.readouterr().err
    assert cli.main(["simulate", "--depth", "inf", "--width", "8", "--steps", "2"]) == 2
    (tmp_path / "x.toml").write_text("[settings]\nwdith = 3\n")
    assert cli.main(["solve", "--config", str(tmp_path / "x.toml"), "--steps", "2"]) == 2
    assert "unknown [settings] keys ['wdith']" in capsys.readouterr().err
    (tmp_path / "d.toml").write_text('[settings]\ndepth = "two"\nsteps = 2\n')
    assert cli.main(["solve", "--config", str(tmp_path / "d.toml")]) == 2
    assert "depth must be an int or 'inf'" in capsys.readouterr().err
    assert cli.main(["show", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's own checks
        cli.main(["solve", "--depth", "two"])
    assert stop.value.code == 2
