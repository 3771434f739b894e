"""Stem / backbone / head networks of the master-slave framework (Guo & Duan, papers/000, Sec. 3.2.2).

"We divide both actor and critic into three components: stem, backbone, head. The stem takes
observations as input and outputs state representation. The backbone predicts middle
representation based on state representation. Then the heads of Actor and Critic networks predict
action or Q-value." The paper's actors and critics are "four layer multi-layer perceptrons"
(Sec. 4.1); with ``hidden = (h, h, h)`` a ``StemBackboneHead`` is exactly that::

    stem:     in_dim -> h          (Linear + activation; an optional input LayerNorm first)
    backbone: h -> h -> h          (two Linear + activation)
    head:     h -> out_dim         (Linear)

Initialisation as ``maestro.nn.mlp.MLP`` (orthogonal, gain sqrt(2) inside, ``out_gain`` for the head),
so that with the same widths the two compute the same family of functions.

The transfer methods work on the parts:

* ``share_parts``: multi-tasking makes two networks hold the *same* backbone (and stem) modules, so
  that both agents' losses train them (Sec. 3.2.2);
* ``copy_overlap``: pre-training starts the master from the slave's weights; where the master sees
  more observation features or drives more actions (Humanoid), the slave's weights go to the
  overlapping columns of the stem and rows of the head and the other entries are zero ("Weights
  related to the reduced observation and action dimensions are initialized as 0", Sec. 4.3), so
  the master initially computes the slave's function, ignoring the extra inputs and leaving the
  extra actions at 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from maestro.nn.mlp import Activation, orthogonal_init

PARTS = ("stem", "backbone", "head")


class StemBackboneHead(nn.Module):
    """``(..., in_dim) -> (..., out_dim)`` as ``head(backbone(stem(x)))`` (module docstring).

    Args:
        in_dim: observation (or critic input) features.
        hidden: widths; ``hidden[0]`` is the stem's output, the backbone maps it through
            ``hidden[1:]`` (empty: the backbone is the identity).
        out_dim: action parameters or 1 (a value).
        activation: ``relu`` or ``tanh``.
        out_gain: orthogonal gain of the head (0.01 for a policy, 1 for a value).
        input_norm: ``LayerNorm(in_dim)`` at the start of the stem.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: Activation = "tanh", out_gain: float = 1.0, input_norm: bool = False) -> None:
        super().__init__()
        if len(hidden) < 1:
            raise ValueError(f"a stem/backbone/head network needs at least one hidden width (the stem's), got {tuple(hidden)}")
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        stem: list[nn.Module] = [nn.LayerNorm(in_dim)] if input_norm else []
        self.stem = nn.Sequential(*stem, orthogonal_init(nn.Linear(in_dim, hidden[0]), math.sqrt(2.0)), act())
        backbone: list[nn.Module] = []
        for a, b in zip(hidden[:-1], hidden[1:]):
            backbone += [orthogonal_init(nn.Linear(a, b), math.sqrt(2.0)), act()]
        self.backbone = nn.Sequential(*backbone)
        self.head = orthogonal_init(nn.Linear(hidden[-1], out_dim), out_gain)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"stem/backbone/head input has {x.shape[-1]} features (shape {tuple(x.shape)}), expected {self.in_dim}")
        return self.head(self.backbone(self.stem(x)))

    def stem_linear(self) -> nn.Linear:
        """The stem's Linear layer (the one that reads the input)."""
        return next(m for m in self.stem if isinstance(m, nn.Linear))


def share_parts(source: StemBackboneHead, target: StemBackboneHead, parts: Sequence[str] = ("backbone",)) -> None:
    """Make ``target`` use ``source``'s modules for ``parts`` (the very same parameters, not copies).

    Raises ``ValueError`` for an unknown part or parts whose shapes differ.
    """
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown network part {part!r}; parts are {list(PARTS)}")
        a, b = getattr(source, part), getattr(target, part)
        shapes_a = [tuple(p.shape) for p in a.parameters()]
        shapes_b = [tuple(p.shape) for p in b.parameters()]
        if shapes_a != shapes_b:
            raise ValueError(f"cannot share the {part}: its parameter shapes differ ({shapes_a} vs {shapes_b})")
        setattr(target, part, a)


@torch.no_grad()
def copy_overlap(source: StemBackboneHead, target: StemBackboneHead, in_index: Sequence[int], out_index: Sequence[int]) -> None:
    """Start ``target`` from ``source``'s weights where their inputs and outputs overlap.

    ``in_index[j]`` is the target's input feature that is the source's feature ``j`` and
    ``out_index[k]`` the target's output that is the source's output ``k``. Afterwards: the stem's
    Linear holds the source's columns at ``in_index`` and zeros in the other columns (its bias is
    the source's); the backbone is the source's; the head holds the source's rows at ``out_index``
    and zeros in the other rows (weight and bias). An input LayerNorm's per-feature affine
    parameters are copied at ``in_index`` (the statistics it takes over all features still see the
    extra ones: exact only without it).

    Raises ``ValueError`` when the index lists do not match the source's sizes or leave the target's.
    """
    src_in, dst_in = source.stem_linear(), target.stem_linear()
    if len(in_index) != source.in_dim or len(out_index) != source.out_dim:
        raise ValueError(f"copy_overlap: {len(in_index)} input and {len(out_index)} output indices for a source of {source.in_dim} inputs and {source.out_dim} outputs")
    if len(set(in_index)) != len(in_index) or len(set(out_index)) != len(out_index):
        raise ValueError("copy_overlap: the input and output indices must not repeat")
    if min(in_index, default=0) < 0 or max(in_index, default=0) >= target.in_dim or min(out_index, default=0) < 0 or max(out_index, default=0) >= target.out_dim:
        raise ValueError(f"copy_overlap: indices outside the target's {target.in_dim} inputs / {target.out_dim} outputs")
    cols = torch.as_tensor(list(in_index), dtype=torch.long)
    rows = torch.as_tensor(list(out_index), dtype=torch.long)
    dst_in.weight.zero_()
    dst_in.weight[:, cols] = src_in.weight
    dst_in.bias.copy_(src_in.bias)
    norms = [(a, b) for a, b in zip(source.stem, target.stem) if isinstance(a, nn.LayerNorm) and isinstance(b, nn.LayerNorm)]
    for a, b in norms:
        b.weight[cols] = a.weight
        b.bias[cols] = a.bias
    target.backbone.load_state_dict(source.backbone.state_dict())
    target.head.weight.zero_()
    target.head.bias.zero_()
    target.head.weight[rows] = source.head.weight
    target.head.bias[rows] = source.head.bias
