"""Scale factors of each parameterization (SPEC §1): branch, readout and learning-rate rules.

One place decides every factor of N, L and γ₀, so the network, the lazy closed forms and the
field equations cannot drift apart.

==============  ====================  ===============  ==========================================
name            branch multiplier     readout          GD learning rate (input, blocks, readout)
==============  ====================  ===============  ==========================================
``depth-mup``   β₀ / L^α              1 / (γ₀ N)       η₀γ₀²N, η₀γ₀²N·L^{2α−1}, η₀γ₀²N
``mup``         β₀                    1 / (γ₀ N)       η₀γ₀²N for all
``sp``          β₀                    1 / √N           η₀ for all
==============  ====================  ===============  ==========================================

Every branch is also divided by √N (``hˡ⁺¹ = hˡ + branch · Wˡ φ(hˡ) / √N``).

Adam (simulator only) takes per-entry steps of size ≈ lr whatever the gradient's scale, so its
rates carry other factors. We use the μP rule for these multipliers: input η₀γ₀, blocks
η₀γ₀·L^{α−1}/√N (α = 1/2: 1/√(NL)), readout η₀γ₀ for ``depth-mup``; ``mup`` drops the L
factor; ``sp`` uses η₀ everywhere. With these, one step moves each block's features by
O(η₀γ₀β₀/L) and the output by O(η₀), for every N and L.
"""

from __future__ import annotations

import dataclasses
import math

PARAMETERIZATIONS = ("depth-mup", "mup", "sp")


@dataclasses.dataclass(frozen=True)
class Scales:
    """Multipliers for one network; entries may be JAX scalars (traced under vmap).

    Attributes:
        branch: multiplier of each residual branch (before the 1/√N).
        readout: r in ``f = r · w·φ(h^{L+1})``.
        lr_input: learning rate of W⁰.
        lr_hidden: learning rate of Wˡ.
        lr_readout: learning rate of w.
        ntk_block: weight of Σ_ℓ Gˡ⁺¹Φˡ in the NTK (SPEC §2): branch² · lr_hidden / lr_input
            for GD, i.e. β₀²/L in depth-μP.
    """

    branch: object
    readout: object
    lr_input: object
    lr_hidden: object
    lr_readout: object
    ntk_block: object


def scales(
    parameterization: str,
    *,
    width: int,
    depth: int,
    alpha: float,
    beta0,
    gamma0,
    eta0,
    optimizer: str = "gd",
) -> Scales:
    """Return the multipliers of SPEC §1 for the given parameterization and sizes."""
    n = float(width)
    depth_f = float(depth)
    if parameterization == "depth-mup":
        branch = beta0 / depth_f**alpha
        readout = 1.0 / (gamma0 * n)
        depth_lr = depth_f ** (2 * alpha - 1)
        base = eta0 * gamma0**2 * n
        ntk_block = beta0**2 / depth_f
    elif parameterization == "mup":
        branch = beta0
        readout = 1.0 / (gamma0 * n)
        depth_lr = 1.0
        base = eta0 * gamma0**2 * n
        ntk_block = beta0**2
    elif parameterization == "sp":
        branch = beta0
        readout = 1.0 / math.sqrt(n)
        depth_lr = 1.0
        base = eta0
        ntk_block = beta0**2
    else:  # validated upstream; kept for direct callers
        raise ValueError(
            f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
        )
    if optimizer == "adam":
        if parameterization == "sp":
            lr_in = lr_hidden = lr_out = eta0
        else:
            adam_depth = depth_f ** (alpha - 1) if parameterization == "depth-mup" else 1.0
            lr_in = lr_out = eta0 * gamma0
            lr_hidden = eta0 * gamma0 * adam_depth / math.sqrt(n)
    else:
        lr_in = lr_out = base
        lr_hidden = base * depth_lr
    return Scales(
        branch=branch,
        readout=readout,
        lr_input=lr_in,
        lr_hidden=lr_hidden,
        lr_readout=lr_out,
        ntk_block=ntk_block,
    )
