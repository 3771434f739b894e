"""Output buffers that a batched env hands out and gets back once nobody holds them.

A batched env returns a fresh observation tensor every step (callers keep last step's observation
beside this one, store both in replay, slice them), so it cannot write into the tensor it returned
before. At large batches that fresh tensor is big (unit combat at ``B = 1024``: 17.6 MB a step) and,
taken from the C allocator each time, it costs a first-touch page fault per 4 KiB page: a quarter
of the step. ``OutputPool`` gives back the memory of a returned tensor once every tensor viewing it
is gone, and fresh memory while any lives, so what a caller holds is never overwritten.

How it knows, with public APIs only: on the CPU each buffer is a NumPy array ``base``; a tensor is
handed out as ``torch.from_numpy(base.view())``, whose storage keeps that one view object alive
(``from_numpy`` holds a reference to the array it was given until the storage is freed, and every
slice, reshape or ``.numpy()`` of the tensor shares that storage). The pool keeps only a weak
reference to the view: once it is dead, no tensor of the caller's sees the memory and ``base`` is
reused. On other devices (CUDA's caching allocator already recycles memory) it allocates afresh.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import Tensor

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64, torch.bool: np.bool_}


class OutputPool:
    """Up to ``keep`` recyclable buffers per shape and dtype (``keep`` >= 2: the tensor handed out
    last step and the one being written may both be live, plus a ``final_obs`` when copies reset)."""

    def __init__(self, device: torch.device, keep: int = 4) -> None:
        if keep < 1:
            raise ValueError(f"OutputPool: keep must be >= 1, got {keep}")
        self.device, self.keep = torch.device(device), keep
        self._bufs: dict[tuple[tuple[int, ...], torch.dtype], list[list]] = {}

    def empty(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """An uninitialised ``shape`` tensor that no tensor handed out earlier and still alive shares memory with."""
        if self.device.type != "cpu" or dtype not in _NUMPY:
            return torch.empty(shape, dtype=dtype, device=self.device)
        slots = self._bufs.setdefault((tuple(shape), dtype), [])
        for slot in slots:  # slot = [base array, weak reference to the view handed out]
            if slot[1]() is None:
                return self._hand_out(slot)
        slot = [np.empty(shape, _NUMPY[dtype]), lambda: None]
        if len(slots) < self.keep:
            slots.append(slot)
        return self._hand_out(slot)

    def __getstate__(self) -> dict:
        """Pickled (and deep-copied) as an empty pool: the buffers are a cache, and their weak
        references cannot be pickled."""
        return {"device": self.device, "keep": self.keep}

    def __setstate__(self, state: dict) -> None:
        self.device, self.keep, self._bufs = state["device"], state["keep"], {}

    @staticmethod
    def _hand_out(slot: list) -> Tensor:
        view = slot[0].view()
        slot[1] = weakref.ref(view)
        return torch.from_numpy(view)
