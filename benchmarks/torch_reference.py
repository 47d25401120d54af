"""PyTorch CPU reference for ``dmft.simulate``: the same depth-μP ResNets, trained the same way.

Each network (SPEC §1, α = 1/2, depth-μP) is::

    h¹   = W⁰ x / √D
    hˡ⁺¹ = hˡ + (β₀/√L) Wˡ relu(hˡ) / √N          ℓ = 1..L
    f    = w · relu(h^{L+1}) / (γ₀ N)

trained by full-batch gradient descent on ``1/(2P) Σ_μ (y_μ − f_μ)²`` with the learning rate
``η₀ γ₀² N`` for every layer, gradients from ``torch.autograd``. Weights are i.i.d. N(0, 1),
drawn by torch or read from an ``.npz`` with arrays ``W0`` (S, N, D), ``Ws`` (S, L, N, N) and
``w`` (S, N), e.g. the initial parameters of ``dmft.simulate(..., steps=0, return_params=True)``.

The loss is recorded before every update and once after the last, ``steps + 1`` values per
seed, like ``SimulationResult.loss``. Seeds are trained either together, with batched matrix
products over a leading seeds axis (``--mode bmm``), or one after another (``--mode loop``);
``--mode auto`` (the default) times a few steps of each and trains in the faster.

Usage::

    python torch_reference.py --data data.npz --width 1024 --depth 8 --steps 100 --seeds 16 \\
        --out torch.json [--init init.npz] [--dtype float64] [--mode auto|bmm|loop|both]

``data.npz`` holds ``X`` (P, D) and ``y`` (P,). The JSON written to ``--out`` holds the
settings, the torch version and, per mode, the losses and the wall times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch


def init_weights(args, dim: int, dtype, generator) -> tuple:
    """Initial ``(W0, [W1 … WL], w)`` with a leading seeds axis, each block contiguous."""
    S, N, L = args.seeds, args.width, args.depth
    if args.init:
        npz = np.load(args.init)
        W0 = torch.as_tensor(npz["W0"], dtype=dtype)
        Ws = torch.as_tensor(npz["Ws"], dtype=dtype)
        w = torch.as_tensor(npz["w"], dtype=dtype)
        expected = {"W0": (S, N, dim), "Ws": (S, L, N, N), "w": (S, N)}
        for name, arr in (("W0", W0), ("Ws", Ws), ("w", w)):
            if tuple(arr.shape) != expected[name]:
                raise ValueError(
                    f"{name} in {args.init} has shape {tuple(arr.shape)}, expected {expected[name]}"
                )
        blocks = [Ws[:, l].contiguous() for l in range(L)]
    else:
        W0 = torch.randn(S, N, dim, dtype=dtype, generator=generator)
        blocks = [torch.randn(S, N, N, dtype=dtype, generator=generator) for _ in range(L)]
        w = torch.randn(S, N, dtype=dtype, generator=generator)
    return W0, blocks, w


def forward(W0, blocks, w, X, *, beta0: float, gamma0: float):
    """Outputs f (..., P) of the networks; weights may carry a leading seeds axis.

    Activations are laid out point-major, ``h : (..., P, N)``, so every product is a
    (batched) ``A @ Bᵀ`` or ``A @ B`` on contiguous operands.
    """
    N, D = W0.shape[-2], W0.shape[-1]
    L = len(blocks)
    branch = beta0 / math.sqrt(L) / math.sqrt(N)
    h = torch.matmul(X, W0.transpose(-1, -2)) / math.sqrt(D)  # (..., P, N)
    for W in blocks:
        # the scale multiplies the small (P, N) product, not the (N, N) weight gradient
        h = h + torch.matmul(torch.relu(h), W.transpose(-1, -2)) * branch
    return torch.matmul(torch.relu(h), w.unsqueeze(-1)).squeeze(-1) / (gamma0 * N)


def train(W0, blocks, w, X, y, args) -> np.ndarray:
    """Full-batch GD for ``args.steps`` updates; returns the loss, shape (..., steps + 1).

    Seeds are independent, so the gradient of the sum of their losses is each seed's gradient.
    """
    params = [W0, *blocks, w]
    for p in params:
        p.requires_grad_(True)
    lr = args.eta0 * args.gamma0**2 * args.width  # depth-μP, α = 1/2: one rate for all layers
    losses = []
    for step in range(args.steps + 1):
        f = forward(W0, blocks, w, X, beta0=args.beta0, gamma0=args.gamma0)
        loss = 0.5 * torch.mean((y - f) ** 2, dim=-1)
        losses.append(loss.detach().clone())
        if step == args.steps:
            break
        grads = torch.autograd.grad(loss.sum(), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-lr)
    return torch.stack(losses, dim=-1).numpy()


def run(args, mode: str, X, y, dtype) -> dict:
    """Initialise and train all seeds in one mode; return the losses and the times.

    ``*_s`` are wall-clock seconds, ``cpu_s`` the process CPU time of the whole run.
    """
    generator = torch.Generator().manual_seed(args.seed)
    c0 = time.process_time()
    t0 = time.perf_counter()
    W0, blocks, w = init_weights(args, X.shape[1], dtype, generator)
    t1 = time.perf_counter()
    if mode == "bmm":
        loss = train(W0, blocks, w, X, y, args)
    else:
        per_seed = []
        for s in range(args.seeds):
            seed_blocks = [W[s].clone() for W in blocks]
            per_seed.append(train(W0[s].clone(), seed_blocks, w[s].clone(), X, y, args))
        loss = np.stack(per_seed)
    t2 = time.perf_counter()
    return {
        "steps": args.steps,
        "loss": loss.tolist(),
        "init_s": t1 - t0,
        "train_s": t2 - t1,
        "total_s": t2 - t0,
        "cpu_s": time.process_time() - c0,
    }


def choose_mode(args, X, y, dtype) -> tuple[str, dict]:
    """Time a short run of each mode and return the faster one, with the trial results."""
    short = argparse.Namespace(**{**vars(args), "steps": args.trial_steps})
    trials = {mode: run(short, mode, X, y, dtype) for mode in ("bmm", "loop")}
    for trial in trials.values():
        del trial["loss"]
    return min(trials, key=lambda m: trials[m]["train_s"]), trials


def write_json_atomic(obj, path: str) -> None:
    """Write JSON to ``path`` through a temporary file in the same directory."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help=".npz with X (P, D) and y (P,)")
    parser.add_argument("--init", help=".npz with initial W0, Ws, w (default: torch.randn)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--depth", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--eta0", type=float, default=0.05)
    parser.add_argument("--beta0", type=float, default=1.0)
    parser.add_argument("--gamma0", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="torch seed when --init is absent")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--mode",
        choices=("bmm", "loop", "both", "auto"),
        default="auto",
        help="bmm: seeds batched; loop: one seed at a time; both: run each; "
        "auto: time --trial-steps of each, then run the faster",
    )
    parser.add_argument("--trial-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    data = np.load(args.data)
    X = torch.as_tensor(data["X"], dtype=dtype)
    y = torch.as_tensor(data["y"], dtype=dtype)

    trials = None
    if args.mode == "auto":
        chosen, trials = choose_mode(args, X, y, dtype)
        modes = (chosen,)
    else:
        modes = ("bmm", "loop") if args.mode == "both" else (args.mode,)
    results = {mode: run(args, mode, X, y, dtype) for mode in modes}
    write_json_atomic(
        {
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "trials": trials,
            "modes": results,
            "fastest": min(results, key=lambda m: results[m]["train_s"]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
