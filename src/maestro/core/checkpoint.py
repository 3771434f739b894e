"""Atomic checkpoints: written to a temporary file, fsynced, renamed; loaded with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (optimiser and module state
dicts, generator states, counters, the resolved config). ``latest_valid`` walks the checkpoints of
a directory from the newest and returns the first that loads, so a file truncated by a crash (or
corrupted on disk) costs at most one checkpoint interval.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import torch

FORMAT = "maestro-checkpoint-1"
_NAME = re.compile(r"^ckpt_(\d{12})\.pt$")


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, corrupt or not a maestro checkpoint."""


def checkpoint_name(env_steps: int) -> str:
    """File name of the checkpoint taken at ``env_steps`` (sorts by step)."""
    return f"ckpt_{env_steps:012d}.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same dir, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    payload = {"format": FORMAT, **obj}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic`` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, unreadable, truncated or not a maestro checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... on bad files
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a maestro checkpoint (no format tag {FORMAT!r})")
    return obj


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files of ``directory``, newest (highest env step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def latest_valid(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any], list[tuple[Path, str]]]:
    """The newest checkpoint of ``directory`` that loads, its content, and the skipped ones with reasons.

    Raises:
        CheckpointError: no checkpoint in ``directory`` loads.
    """
    skipped: list[tuple[Path, str]] = []
    for path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path, map_location), skipped
        except CheckpointError as err:
            skipped.append((path, str(err)))
    if skipped:
        reasons = "; ".join(r for _, r in skipped)
        raise CheckpointError(f"no valid checkpoint in {directory}: {reasons}")
    raise CheckpointError(f"no checkpoint in {directory}")


def checkpointed_env_steps(run_dir: str | Path) -> int | None:
    """Env steps of the newest valid checkpoint in ``run_dir/checkpoints``, or None when there is none
    (nothing to resume from): how far a run got, for scripts that resume a grid of runs."""
    try:
        _, payload, _ = latest_valid(Path(run_dir) / "checkpoints")
    except CheckpointError:
        return None
    return int(payload["run"]["env_steps"])


def newest_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> dict[str, Any]:
    """The content of the checkpoint file ``path``, or of the newest valid checkpoint of the run
    directory ``path`` (or, below it, of the run whose checkpoints changed last).

    Raises:
        CheckpointError: ``path`` does not exist or holds no valid checkpoint (``what`` names the use).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what}: {p} does not exist (give a run directory or a checkpoint file)")
    if p.is_file():
        return load_checkpoint(p, map_location)
    dirs = [p] if any(p.glob("ckpt_*.pt")) else sorted((c.parent for c in p.rglob("ckpt_*.pt")), key=lambda d: d.stat().st_mtime)
    if not dirs:
        raise CheckpointError(f"{what}: no checkpoint at or below {p}")
    return latest_valid(dirs[-1], map_location=map_location)[1]


def prune(directory: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints of ``directory`` (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for path in list_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)


def save_policy(policy: Any, path: str | Path) -> Path:
    """Write ``policy.policy_state()`` alone, atomically, to ``path``."""
    return save_atomic({"policy": policy.policy_state()}, path)


def read_policy_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The ``policy_state()`` stored in a policy file (``save_policy``) or a training checkpoint."""
    obj = load_checkpoint(path, map_location=map_location)
    if "policy" in obj:
        return obj["policy"]
    try:
        return obj["state"]["policy"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: neither a policy file nor a training checkpoint with a policy") from None


def load_policy(state: dict[str, Any], device: str | torch.device = "cpu") -> Any:
    """Rebuild a policy from its ``policy_state()`` (``state["class"]`` names a class inside maestro,
    ``"module:Class"``, whose ``from_state`` is called). Anything else is a ``ValueError``."""
    path = str(state.get("class", "")) if isinstance(state, dict) else ""
    mod_name, _, cls_name = path.partition(":")
    if not mod_name.startswith("maestro.") or not cls_name:
        raise ValueError(f"not a maestro policy state (class {path!r})")
    cls = getattr(importlib.import_module(mod_name), cls_name, None)
    if cls is None or not hasattr(cls, "from_state"):
        raise ValueError(f"not a maestro policy state: {path!r} names no policy class")
    return cls.from_state(state, device)


def tree_to_device(x: Any, device: str | torch.device) -> Any:
    """Every tensor of a nested dict moved to ``device`` (other leaves unchanged), e.g. the
    current observations of a checkpoint loaded on another device."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: tree_to_device(v, device) for k, v in x.items()}
    return x
