"""Monte Carlo sites spread over several devices (here 4 host CPU devices, in a subprocess:
the device count is fixed when JAX starts) give the one-device result."""

import json
import os
import subprocess
import sys

import pytest

import dmft

SCRIPT = r"""
import json, os
import numpy as np, jax, dmft
X = np.random.default_rng(0).normal(size=(4, 3))
y = np.array([1.0, -0.5, 0.3, 0.8])
kw = dict(depth=2, activation="relu", eta0=0.3, steps=4, samples=1024, replicas=2,
          dtype="float64", throw=False)
one = dmft.solve_dmft(X, y, devices=1, **kw)
four = dmft.solve_dmft(X, y, **kw)  # default: every local device
etas = np.array([0.1, 0.3])
swept = jax.vmap(lambda e: dmft.solve_dmft(X, y, **{**kw, "eta0": e}).loss)(etas)
rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))
try:
    dmft.solve_dmft(X, y, **{**kw, "samples": 1026})
    message = None
except ValueError as err:
    message = str(err)
print(json.dumps(dict(
    devices=jax.device_count(), recorded=four.config["devices"], default_samples=dmft.solve_dmft(
        X, y, **{**kw, "samples": None, "steps": 1}).config["samples"],
    loss=rel(four.loss, one.loss), ntk=rel(four.ntk, one.ntk),
    phi=rel(four.phi_two_time, one.phi_two_time), error=rel(four.loss_error, one.loss_error),
    mc=float(np.max(np.asarray(one.loss_error) / np.asarray(one.loss))),
    swept=rel(swept[1], one.loss), message=message)))
"""


@pytest.fixture(scope="module")
def four_devices():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_ENABLE_X64": "1",
        "MPLBACKEND": "Agg",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices_give_the_one_device_solve(four_devices):
    r = four_devices
    assert r["devices"] == 4 and r["recorded"] == 4
    # the same draws, summed in another order: float64 rounding, far below the Monte Carlo error
    for name in ("loss", "ntk", "phi", "error"):
        assert r[name] < 1e-10, (name, r[name])
    assert r["mc"] > 1e-4  # (the Monte Carlo error the difference is compared against)
    assert r["swept"] < 1e-10  # a vmapped η₀ grid, sites sharded inside


def test_samples_must_split_evenly(four_devices):
    assert "multiple of the number of devices (4)" in four_devices["message"]
    assert "samples=1028" in four_devices["message"]
    assert four_devices["default_samples"] % 4 == 0


@pytest.mark.parametrize(
    "devices, err, match",
    [(0, ValueError, r"\[1, 1\]"), (2, ValueError, r"\[1, 1\]"), ("gpu", TypeError, "devices"),
     ([], TypeError, "devices"), (True, TypeError, "devices")],
)  # fmt: skip
def test_bad_devices_fail_before_compiling(devices, err, match):
    X, y = [[1.0, 0.0]], [1.0]
    with pytest.raises(err, match=match):
        dmft.solve_dmft(X, y, depth=1, activation="relu", steps=1, devices=devices)
