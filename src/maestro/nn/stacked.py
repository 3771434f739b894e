"""``K`` separate multi-layer perceptrons evaluated at once from one flat parameter tensor ``(K, P)``.

The TRPO family (Schulman et al. 2015, arXiv 1502.05477; MATRPO, Li & He 2020, arXiv 2010.07916)
works on flat parameter vectors: gradients, Fisher products, conjugate gradient and line searches
are vector operations. With one agent per row, ``theta`` ``(K, P)`` holds ``K`` agents' networks and
every trust-region operation of ``maestro.core.trust_region``'s batched functions treats the rows as
separate problems. ``StackedMLP`` is the layout of such a row (which slice is which layer) and the
forward pass, one ``baddbmm`` per layer for all ``K`` networks: no Python loop over agents.

For the trust-region maths at a fixed point ``theta_old`` (every TRPO and MATRPO step of an iteration
starts there), ``linearise`` runs the forward pass once and keeps each layer's input and activation
derivative; ``jvp`` (``J v``, forward mode) and ``vjp`` (``J^T w``) then cost two batched matrix products
per layer each, with no autograd graph (a Fisher-vector product as ``J^T (F_out (J v))`` is about 2.5x
cheaper than autograd's double backward through the KL).

Initialisation follows OpenAI Baselines (which the MATRPO authors' code uses): orthogonal weights
with gain ``sqrt(2)`` in hidden layers and a given gain for the output layer (0.001 for policy heads
in the MATRPO code, 1 for value heads), zero biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

Activation = Literal["selu", "tanh", "relu"]
_ACTIVATIONS = {"selu": torch.selu, "tanh": torch.tanh, "relu": torch.relu}
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # Klambauer et al. 2017, torch.selu's constants


def _derivative(activation: str, pre: Tensor, post: Tensor) -> Tensor:
    """The activation's derivative at the pre-activation ``pre`` (``post`` = its value), elementwise."""
    if activation == "selu":
        return torch.where(pre > 0, torch.full_like(pre, _SELU_SCALE), post + _SELU_SCALE * _SELU_ALPHA)
    if activation == "tanh":
        return 1.0 - post * post
    return (pre > 0).to(pre.dtype)


@dataclass(frozen=True)
class Linearisation:
    """What ``StackedMLP.linearise`` keeps of a forward pass at ``theta``: per layer its input ``(K, S, in)``
    and, for hidden layers, the activation's derivative ``(K, S, out)`` (None for the output layer).

    ``rows(index)`` and ``samples(step)`` select networks and every ``step``-th sample (new tensors / views).
    """

    theta: Tensor
    inputs: tuple[Tensor, ...]
    derivatives: tuple[Tensor | None, ...]
    output: Tensor

    def rows(self, index: Tensor) -> "Linearisation":
        return Linearisation(self.theta[index], tuple(x[index] for x in self.inputs), tuple(d if d is None else d[index] for d in self.derivatives), self.output[index])

    def samples(self, step: int) -> "Linearisation":
        return Linearisation(self.theta, tuple(x[:, ::step] for x in self.inputs), tuple(d if d is None else d[:, ::step] for d in self.derivatives), self.output[:, ::step])


class StackedMLP:
    """The layout and forward pass of ``in_dim -> hidden... -> out_dim`` MLPs stored as rows of ``(K, P)``.

    Row layout: per layer its weight ``(in, out)`` (input-major, for ``baddbmm``) then its bias ``(out,)``.

    Args:
        in_dim: input features.
        hidden: hidden widths (``()``: a linear map).
        out_dim: output features.
        activation: ``selu`` (MATRPO paper: "two hidden layers of 128 SeLU units"), ``tanh`` or ``relu``.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: Activation = "selu") -> None:
        if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"StackedMLP: in_dim {in_dim}, hidden {hidden} and out_dim {out_dim} must all be >= 1")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"StackedMLP: activation {activation!r}, expected one of {sorted(_ACTIVATIONS)}")
        self.in_dim, self.hidden, self.out_dim, self.activation = in_dim, tuple(hidden), out_dim, activation
        widths = (in_dim, *self.hidden, out_dim)
        self.layers = list(zip(widths[:-1], widths[1:]))
        self.num_params = sum(i * o + o for i, o in self.layers)

    def init(
        self, generators: Sequence[torch.Generator], out_gain: float, hidden_gain: float = math.sqrt(2.0), dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``(K, P)`` fresh parameters, row ``k`` drawn from ``generators[k]`` alone (so an agent in its own
        process draws its row bit for bit): orthogonal weights, zero biases."""
        rows = []
        for generator in generators:
            pieces = []
            for k, (i, o) in enumerate(self.layers):
                weight = torch.empty(o, i, dtype=dtype)
                nn.init.orthogonal_(weight, gain=out_gain if k == len(self.layers) - 1 else hidden_gain, generator=generator)
                pieces += [weight.t().reshape(-1), torch.zeros(o, dtype=dtype)]
            rows.append(torch.cat(pieces))
        return torch.stack(rows)

    def unflatten(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views ``[(weight (K, in, out), bias (K, out)), ...]`` into ``theta`` ``(K, P)``."""
        if theta.dim() != 2 or theta.shape[1] != self.num_params:
            raise ValueError(f"StackedMLP: theta has shape {tuple(theta.shape)}, expected (K, {self.num_params})")
        out, offset = [], 0
        for i, o in self.layers:
            weight = theta[:, offset : offset + i * o].reshape(-1, i, o)
            offset += i * o
            out.append((weight, theta[:, offset : offset + o]))
            offset += o
        return out

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        """``theta`` ``(K, P)``, ``x`` ``(K, ..., in_dim)`` -> ``(K, ..., out_dim)``: row ``k`` of ``x`` through network ``k``."""
        if x.dim() < 2 or x.shape[0] != theta.shape[0] or x.shape[-1] != self.in_dim:
            raise ValueError(f"StackedMLP: input has shape {tuple(x.shape)}, expected ({theta.shape[0]}, ..., {self.in_dim})")
        lead = x.shape[:-1]
        h = x.reshape(x.shape[0], -1, self.in_dim)
        act = _ACTIVATIONS[self.activation]
        layers = self.unflatten(theta)
        for k, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias.unsqueeze(1), h, weight)
            if k < len(layers) - 1:
                h = act(h)
        return h.reshape(*lead, self.out_dim)

    @torch.no_grad()
    def linearise(self, theta: Tensor, x: Tensor) -> Linearisation:
        """The forward pass at ``theta`` ``(K, P)`` on ``x`` ``(K, S, in_dim)``, keeping what ``jvp`` and ``vjp`` need."""
        if x.dim() != 3 or x.shape[0] != theta.shape[0] or x.shape[-1] != self.in_dim:
            raise ValueError(f"StackedMLP.linearise: input has shape {tuple(x.shape)}, expected ({theta.shape[0]}, S, {self.in_dim})")
        act = _ACTIVATIONS[self.activation]
        layers = self.unflatten(theta)
        inputs, derivatives, h = [], [], x
        for k, (weight, bias) in enumerate(layers):
            inputs.append(h)
            pre = torch.baddbmm(bias.unsqueeze(1), h, weight)
            if k < len(layers) - 1:
                h = act(pre)
                derivatives.append(_derivative(self.activation, pre, h))
            else:
                h = pre
                derivatives.append(None)
        return Linearisation(theta.detach(), tuple(inputs), tuple(derivatives), h)

    @torch.no_grad()
    def jvp(self, lin: Linearisation, tangent: Tensor) -> Tensor:
        """``J v``: the output's directional derivative ``(K, S, out)`` along ``tangent`` ``(K, P)`` at ``lin.theta``."""
        if tangent.shape != lin.theta.shape:
            raise ValueError(f"StackedMLP.jvp: tangent has shape {tuple(tangent.shape)}, expected {tuple(lin.theta.shape)}")
        d = None
        for (weight, _), (d_weight, d_bias), h, deriv in zip(self.unflatten(lin.theta), self.unflatten(tangent), lin.inputs, lin.derivatives):
            d_pre = torch.baddbmm(d_bias.unsqueeze(1), h, d_weight)
            if d is not None:
                d_pre = d_pre.baddbmm_(d, weight)
            d = d_pre if deriv is None else d_pre * deriv
        return d

    @torch.no_grad()
    def vjp(self, lin: Linearisation, cotangent: Tensor) -> Tensor:
        """``J^T w``: the gradient ``(K, P)`` of ``sum(cotangent * output)`` w.r.t. the parameters at ``lin.theta``."""
        if cotangent.shape != lin.output.shape:
            raise ValueError(f"StackedMLP.vjp: cotangent has shape {tuple(cotangent.shape)}, expected {tuple(lin.output.shape)}")
        layers = self.unflatten(lin.theta)
        pieces: list[Tensor] = []
        g = cotangent
        for k in range(len(layers) - 1, -1, -1):
            weight, _ = layers[k]
            if lin.derivatives[k] is not None:
                g = g * lin.derivatives[k]
            pieces.append(g.sum(1))
            pieces.append(torch.bmm(lin.inputs[k].transpose(1, 2), g).reshape(g.shape[0], -1))
            if k > 0:
                g = torch.bmm(g, weight.transpose(1, 2))
        return torch.cat(pieces[::-1], 1)
