"""Run every benchmark and write its JSON under benchmarks/results/.

python benchmarks/run_all.py [--small] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--torch-python", default=None)
    args = parser.parse_args()
    results = os.path.join(HERE, "results")
    suffix = "_small" if args.small else ""
    small = ["--small"] if args.small else []
    quick = ["--quick"] if args.small else []
    # the network ensembles of the full run are meant for an accelerator (see benchmarks/README.md)
    nets = os.path.join(results, f"flow_depth_networks{suffix}.json")
    runs = [
        ["bench_simulate.py", *small, "--out", os.path.join(results, f"simulate{suffix}.json")]
        + (["--torch-python", args.torch_python] if args.torch_python else []),
        [
            "bench_solve_linear.py",
            *small,
            "--out",
            os.path.join(results, f"solve_linear{suffix}.json"),
        ],
        [
            "bench_memory_devices.py",
            *small,
            "--out",
            os.path.join(results, f"memory_devices{suffix}.json"),
        ],
        ["bench_mc_flops.py", *small, "--out", os.path.join(results, f"mc_flops{suffix}.json")],
        ["bench_speedup.py", *small, "--out", os.path.join(results, f"speedup{suffix}.json")],
        ["validate_flow_depth.py", "networks", *quick, "--networks", nets],
        [
            "validate_flow_depth.py",
            "compare",
            *quick,
            "--networks",
            nets,
            "--out",
            os.path.join(results, f"validate_flow_depth{suffix}.json"),
        ],
        [
            "flow_depth_orders.py",
            *quick,
            "--out",
            os.path.join(results, f"flow_depth_orders{suffix}.json"),
            "--figure",
            os.path.join(results, f"alpha_limits{suffix}.png"),
        ],
        [
            "convergence_study.py",
            *small,
            "--out",
            os.path.join(results, f"convergence_study{suffix}.json"),
            "--figure",
            os.path.join(results, f"convergence_linear{suffix}.png"),
        ],
        ["bench_solve_vs_networks.py", *quick],  # --quick writes nothing
        [
            "mc_error_scaling.py",
            *quick,
            "--out",
            os.path.join(results, f"mc_error_scaling{suffix}.json"),
        ],
        [
            "validate_convergence.py",
            *quick,
            "--out",
            os.path.join(results, f"validate_convergence{suffix}.json"),
        ],
    ]
    if args.small:  # the accelerator check at tiny sizes, so it keeps working between GPU runs
        runs.append(["gpu_check.py", "--small", os.path.join(results, "gpu_check_small.json")])
    failed = 0
    for cmd in runs:
        print("==", " ".join(cmd), flush=True)
        failed |= subprocess.call([sys.executable, os.path.join(HERE, cmd[0]), *cmd[1:]]) != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
