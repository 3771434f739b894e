"""A preallocated tensor replay buffer for off-policy learners (DQN, DDPG, MADDPG).

Experience replay (Lin 1992; Mnih et al. 2015) as used by MADDPG (Lowe et al. 2017, arXiv
1706.02275, Algorithm 1: "Store (x, a, r, x') in replay buffer D ... sample a random minibatch").

``ReplayBuffer`` holds named fields in tensors allocated once, each ``(capacity, *shape)``. ``add``
writes the transitions of ``B`` env copies at once (one indexed copy per field, no loop over copies)
at the next ``B`` slots of a ring, overwriting the oldest transitions when full. ``sample_index``
draws slots uniformly from the filled part (every stored transition equally likely, old or recent).

Partitions (policy ensembles, Lowe et al. 2017 Sec. 4.3: "we maintain a replay buffer D_i^(k) for
each sub-policy k of agent i"): with ``partition=(field, K)``, the integer field ``(capacity, P)``
(e.g. the sub-policy index of each of ``P`` agents) assigns every transition, for each ``p``, to one
of ``K`` sub-buffers. The transitions are stored once; each of the ``P * K`` sub-buffers is a FIFO
ring of slot indices (``(P * K, capacity)``), kept in step with the main ring: the transitions the
main ring overwrites are the oldest ones, hence the oldest of their sub-buffers, which drop them.
``sample_partitioned`` then draws, for every ``(p, k)``, slots uniformly among the stored
transitions of that sub-buffer, so the ``K`` sub-buffers of ``p`` together hold exactly the
``capacity`` newest transitions, split by which sub-policy acted.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

FieldSpec = tuple[tuple[int, ...], torch.dtype]
"""Shape of one transition's entry (without the leading capacity axis) and its dtype."""


class ReplayBuffer:
    """Ring buffer of transitions in preallocated tensors.

    Args:
        capacity: maximum number of transitions kept (the oldest are overwritten).
        fields: name -> (shape of one entry, dtype); storage is ``(capacity, *shape)``.
        device: where the storage lives.
        partition: optional ``(field, K)``: the field, of shape ``(P,)`` and an integer dtype with
            values in ``[0, K)``, splits the buffer into ``P * K`` sub-buffers (see the module docstring).
    """

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, FieldSpec],
        device: torch.device | str = "cpu",
        partition: tuple[str, int] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.fields = {k: (tuple(s), d) for k, (s, d) in fields.items()}
        self.data: dict[str, Tensor] = {k: torch.zeros((self.capacity, *s), dtype=d, device=self.device) for k, (s, d) in self.fields.items()}
        self.ptr = 0
        """Next slot to write."""
        self.size = 0
        """Number of valid transitions (``<= capacity``)."""
        self.total = 0
        """Transitions ever added."""
        self.partition = partition
        if partition is not None:
            name, K = partition
            if name not in self.fields or len(self.fields[name][0]) != 1 or self.fields[name][1].is_floating_point:
                raise ValueError(f"partition field {name!r} must be an integer field of shape (P,), got {self.fields.get(name)}")
            if K < 1:
                raise ValueError(f"partition needs K >= 1 sub-buffers, got {K}")
            P = self.fields[name][0][0]
            self.n_parts, self.K = P, int(K)
            self.ring = torch.zeros(P * K, self.capacity, dtype=torch.long, device=self.device)
            self.ring_head = torch.zeros(P * K, dtype=torch.long, device=self.device)
            self.ring_size = torch.zeros(P * K, dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------ writing
    def add(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Write ``B`` transitions (every field ``(B, *shape)``); returns the slots ``(B,)`` written.

        ``B`` may exceed the free space: the ring wraps around and overwrites the oldest. ``B`` must
        not exceed ``capacity``.
        """
        missing = [k for k in self.fields if k not in batch]
        if missing:
            raise ValueError(f"replay add: missing fields {missing}; expected {list(self.fields)}")
        B = next(iter(batch.values())).shape[0]
        if B > self.capacity:
            raise ValueError(f"replay add: {B} transitions exceed the capacity {self.capacity}")
        for k, (shape, _) in self.fields.items():
            if tuple(batch[k].shape) != (B, *shape):
                raise ValueError(f"replay add: field {k!r} has shape {tuple(batch[k].shape)}, expected {(B, *shape)}")
        slots = (self.ptr + torch.arange(B, device=self.device)) % self.capacity
        overwritten = max(0, self.size + B - self.capacity)  # the last `overwritten` slots held the oldest data
        if self.partition is not None:
            self._update_rings(slots, batch[self.partition[0]], overwritten)
        for k, t in self.data.items():
            t[slots] = batch[k].to(device=self.device, dtype=t.dtype)
        self.ptr = (self.ptr + B) % self.capacity
        self.size = min(self.capacity, self.size + B)
        self.total += B
        return slots

    def _update_rings(self, slots: Tensor, part: Tensor, overwritten: int) -> None:
        """Drop the overwritten slots from their sub-buffers, then append the new ones (batched)."""
        P, K, cap = self.n_parts, self.K, self.capacity
        offs = torch.arange(P, device=self.device) * K  # ring id = p * K + k
        if overwritten:
            old = self.data[self.partition[0]][slots[slots.shape[0] - overwritten :]].long() + offs  # (O, P)
            self.ring_head = (self.ring_head + torch.bincount(old.reshape(-1), minlength=P * K)) % cap
            self.ring_size = self.ring_size - torch.bincount(old.reshape(-1), minlength=P * K)
        part = part.to(self.device).long()
        if bool(((part < 0) | (part >= K)).any()):
            raise ValueError(f"replay add: partition field {self.partition[0]!r} must lie in [0, {K}), got {part.min().item()}..{part.max().item()}")
        ids = part + offs  # (B, P)
        onehot = torch.nn.functional.one_hot(ids, P * K)  # (B, P, P*K)
        rank = (onehot.cumsum(0) - onehot).gather(2, ids[..., None]).squeeze(2)  # (B, P): earlier rows with the same id
        pos = (self.ring_head[ids] + self.ring_size[ids] + rank) % cap
        self.ring[ids, pos] = slots[:, None].expand_as(ids)
        self.ring_size = self.ring_size + onehot.sum((0, 1))

    # ------------------------------------------------------------------ sampling
    def sample_index(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        """Slots ``shape`` drawn uniformly (with replacement) from the stored transitions."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        u = torch.rand(shape, generator=generator, device=self.device)
        return (u * self.size).long().clamp_max(self.size - 1)  # stored slots are [0, size) until the ring is full

    def sample_partitioned(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Slots ``(P, K, n)``: for each ``(p, k)``, uniform among the transitions of sub-buffer ``(p, k)``.

        An empty sub-buffer (a sub-policy that has not acted yet) samples from the whole buffer.
        """
        if self.partition is None:
            raise ValueError("this replay buffer has no partition")
        P, K = self.n_parts, self.K
        u = torch.rand(P * K, n, generator=generator, device=self.device)
        size = self.ring_size[:, None]
        j = (u * size.clamp_min(1)).long().clamp_max((size - 1).clamp_min(0))
        slots = self.ring.gather(1, (self.ring_head[:, None] + j) % self.capacity)
        fallback = (u * self.size).long().clamp_max(self.size - 1)
        return torch.where(size > 0, slots, fallback).reshape(P, K, n)

    def gather(self, idx: Tensor) -> dict[str, Tensor]:
        """Every field at slots ``idx`` (any shape ``S``): ``{name: (*S, *shape)}``."""
        return {k: t[idx] for k, t in self.data.items()}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, object]:
        """The filled part of the storage and the ring pointers (for checkpoints)."""
        out: dict[str, object] = {"ptr": self.ptr, "size": self.size, "total": self.total, "data": {k: t[: self.size].clone() for k, t in self.data.items()}}
        if self.partition is not None:
            out["ring"] = self.ring.clone()
            out["ring_head"] = self.ring_head.clone()
            out["ring_size"] = self.ring_size.clone()
        return out

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Inverse of ``state_dict`` (same capacity and fields)."""
        size = int(state["size"])  # type: ignore[arg-type]
        data: Mapping[str, Tensor] = state["data"]  # type: ignore[assignment]
        for k, t in self.data.items():
            t[:size] = data[k].to(self.device)
        self.ptr, self.size, self.total = int(state["ptr"]), size, int(state["total"])  # type: ignore[arg-type]
        if self.partition is not None:
            self.ring.copy_(state["ring"])  # type: ignore[arg-type]
            self.ring_head.copy_(state["ring_head"])  # type: ignore[arg-type]
            self.ring_size.copy_(state["ring_size"])  # type: ignore[arg-type]
