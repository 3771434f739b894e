"""The run context: budget, seeding, metrics, progress, evaluation, checkpoints, resume, signals.

An algorithm's ``train(cfg, env, run)`` owns its loop and talks to the run at iteration
boundaries::

    state = run.restore()                      # None, or the trainer state of a resumed run
    while not run.finished:
        ...collect, update...
        run.step(n_env_steps, metrics)         # counters, metrics.jsonl + TensorBoard, progress bar
        run.maybe_evaluate(policy)             # every ``eval_every`` env steps and at the end
        run.maybe_checkpoint(snapshot)         # every ``checkpoint_every``, at the end, on SIGINT/SIGTERM

Metric names are a fixed namespace that reports rely on: ``train/episode_return`` (mean return of
the agents of the first group), ``train/episode_return/<group>``, ``train/episode_length``,
``train/success`` (and other env extras), ``eval/...`` (same keys, from ``maestro.core.evaluate``),
``loss/...``, ``time/env_steps_per_s`` and ``time/elapsed_s``. Every row carries ``env_steps`` and
``iteration``.

Checkpoints hold everything needed to continue bit for bit: the trainer's state (networks,
optimisers, its sampling generator, env state and generator, normaliser statistics), the
global RNG states, counters and the resolved config. They are written atomically and loaded with
``torch.load(weights_only=True)``; a resumed run on CPU ends with the same parameters as an
uninterrupted one (``tests/test_run.py``).

Library code never prints: the run logs through ``logging`` (logger ``maestro``, plus
``log.txt`` in the run directory) and draws a progress bar on stderr only when it is a TTY.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from maestro.core import checkpoint as ckpt
from maestro.core.evaluate import EnvFactory, evaluate, summarise
from maestro.core.seeding import capture_rng, restore_rng, seed_everything

log = logging.getLogger("maestro")


@dataclass(frozen=True)
class RunConfig:
    """How a training run is driven (the ``run:`` section of a recipe)."""

    env_steps: int = 1_000_000
    """Training budget in environment steps (one step of one env copy counts 1)."""
    num_envs: int = 128
    """Env copies ``B`` stepped in one batch (MAPPO's ``n_rollout_threads`` for MPE is 128)."""
    device: str = "cpu"
    """Torch device of the env and the networks (``cpu``, ``cuda``, ``cuda:1``)."""
    torch_threads: int = 1
    """Threads torch may use on CPU (0 keeps torch's default). 1 is fastest for maestro's small
    networks, and avoids spinning threads slowing everything down on a loaded machine."""
    eval_every: int = 0
    """Env steps between evaluations (0: evaluate once at the end of training)."""
    eval_episodes: int = 32
    """Episodes per evaluation (one per env copy, from a fixed seed set)."""
    eval_seed: int = 12345
    """Seed of the evaluation episodes (fixed, so evaluations are comparable over time)."""
    eval_deterministic: bool = True
    """Evaluate with the policy's mode (argmax / mean) instead of sampling (as MAPPO's evaluation does)."""
    checkpoint_every: int = 0
    """Env steps between checkpoints (0: only at the end and on interruption)."""
    keep_checkpoints: int = 3
    """Number of newest checkpoints kept on disk (0 keeps all)."""
    tensorboard: bool = True
    """Also write TensorBoard event files (``tb/`` in the run directory)."""
    progress: bool = True
    """Show a progress bar (only drawn when stderr is a terminal)."""

    def __post_init__(self) -> None:
        for name in ("env_steps", "num_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "keep_checkpoints", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name} must be >= 0, got {getattr(self, name)}")


def env_snapshot(env: Any) -> dict[str, Any]:
    """Everything that defines a batched env's future: ``get_state()`` and its generator state."""
    return {"state": env.get_state(), "rng": env.rng.get_state()}


def env_restore(env: Any, snap: dict[str, Any]) -> None:
    """Inverse of ``env_snapshot``."""
    env.set_state(snap["state"])
    env.rng.set_state(snap["rng"])


class _Progress:
    """A tqdm bar over env steps, or nothing when disabled / not a terminal."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True, desc=desc, leave=True)

    def update(self, n: int, postfix: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Run:
    """A training run: see the module docstring.

    Args:
        cfg: the run section of the recipe.
        directory: where ``metrics.jsonl``, ``tb/``, ``checkpoints/`` and ``log.txt`` go; ``None``
            keeps everything in memory (tests, quick experiments): no files and no checkpoints.
        seed: seeds Python, NumPy and torch at construction (before networks are built).
        config: the resolved recipe as plain data, stored in every checkpoint.
        make_env: ``make_env(num_envs, seed) -> env`` for evaluation episodes (``None``: no evaluation).
        resume: continue from the newest valid checkpoint in ``directory/checkpoints``.
        hooks: callables ``hook(run)`` called after every ``step`` (tests use them to stop a run).
        name: label of the progress bar.
    """

    KEY_METRIC = "train/episode_return"

    def __init__(
        self,
        cfg: RunConfig,
        directory: str | Path | None = None,
        *,
        seed: int = 0,
        config: dict[str, Any] | None = None,
        make_env: EnvFactory | None = None,
        resume: bool = False,
        hooks: tuple[Callable[["Run"], None], ...] = (),
        name: str = "train",
    ) -> None:
        self.cfg = cfg
        self.dir = Path(directory) if directory is not None else None
        self.seed = seed
        self.config = config or {}
        self.make_env = make_env
        self.hooks = tuple(hooks)
        self.name = name
        self.env_steps = 0
        self.iteration = 0
        self.elapsed = 0.0
        self.stop_requested = False
        self.stop_signal: int | None = None
        self.last_checkpoint: Path | None = None
        self.last_eval: dict[str, float] = {}
        self.resumed_from: Path | None = None
        self._resume_payload: dict[str, Any] | None = None
        self._last_ckpt_steps = 0
        self._last_eval_steps = 0
        self._final_eval_done = False
        self._key_value: float | None = None
        self._t0 = time.perf_counter()
        self._t_last = self._t0
        self._old_handlers: dict[int, Any] = {}
        self._log_handler: logging.Handler | None = None
        self._metrics_file = None
        self._tb = None
        self._progress: _Progress | None = None
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        seed_everything(seed)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._log_handler = logging.FileHandler(self.dir / "log.txt")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(self._log_handler)
            if resume:
                self._load_resume()
            self._open_outputs()
        elif resume:
            raise ckpt.CheckpointError("cannot resume a run without a directory")

    # ------------------------------------------------------------------ files
    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.dir is None else self.dir / "checkpoints"

    @property
    def metrics_path(self) -> Path | None:
        return None if self.dir is None else self.dir / "metrics.jsonl"

    def _load_resume(self) -> None:
        assert self.checkpoint_dir is not None
        path, payload, skipped = ckpt.latest_valid(self.checkpoint_dir)
        for bad, reason in skipped:
            log.warning("skipping checkpoint %s: %s", bad.name, reason)
        self._resume_payload = payload
        self.resumed_from = path
        meta = payload["run"]
        self.env_steps = int(meta["env_steps"])
        self.iteration = int(meta["iteration"])
        self.elapsed = float(meta["elapsed"])
        self._last_ckpt_steps = self.env_steps
        self._last_eval_steps = int(meta.get("last_eval_steps", 0))
        self._truncate_metrics(self.env_steps)
        log.info("resuming from %s (env step %d, iteration %d)", path, self.env_steps, self.iteration)

    def _truncate_metrics(self, env_steps: int) -> None:
        """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
        path = self.metrics_path
        if path is None or not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a row cut by the crash
            if row.get("env_steps", 0) <= env_steps:
                keep.append(line)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(x + "\n" for x in keep))
        tmp.replace(path)

    def _open_outputs(self) -> None:
        assert self.dir is not None
        self._metrics_file = open(self.dir / "metrics.jsonl", "a", buffering=1)
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("TensorBoard logging is off: the 'tensorboard' package is not installed (pip install tensorboard)")
            else:
                self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=self.env_steps if self.resumed_from else None)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "Run":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        self._progress = _Progress(self.cfg.env_steps, min(self.env_steps, self.cfg.env_steps), self.cfg.progress, self.name)
        self._t0 = self._t_last = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.stop_requested = True
        self.stop_signal = signum
        log.warning("received %s: finishing the iteration, writing a checkpoint and stopping", signal.Signals(signum).name)

    def request_stop(self) -> None:
        """Stop at the end of the current iteration (with a checkpoint), as SIGINT/SIGTERM do."""
        self.stop_requested = True

    def close(self) -> None:
        """Restore signal handlers and close files (idempotent)."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    # ------------------------------------------------------------------ the loop's calls
    @property
    def finished(self) -> bool:
        """True once the budget is spent or a stop was requested (SIGINT/SIGTERM/``request_stop``)."""
        return self.stop_requested or self.env_steps >= self.cfg.env_steps

    def restore(self) -> dict[str, Any] | None:
        """The trainer state saved by ``maybe_checkpoint`` when resuming (global RNGs restored), else ``None``."""
        if self._resume_payload is None:
            return None
        restore_rng(self._resume_payload["run"]["rng"])
        state = self._resume_payload["state"]
        self._resume_payload = None
        return state

    def step(self, env_steps: int, metrics: dict[str, float]) -> None:
        """Count ``env_steps`` more steps and one iteration; log ``metrics`` (plus timing)."""
        now = time.perf_counter()
        dt = max(now - self._t_last, 1e-9)
        self.elapsed += dt
        self._t_last = now
        self.env_steps += env_steps
        self.iteration += 1
        row = dict(metrics)
        row["time/env_steps_per_s"] = env_steps / dt
        row["time/elapsed_s"] = self.elapsed
        self.log_metrics(row)
        if self.KEY_METRIC in row and math.isfinite(row[self.KEY_METRIC]):
            self._key_value = row[self.KEY_METRIC]
        if self._progress is not None:
            post = {"sps": f"{row['time/env_steps_per_s']:.0f}"}
            if self._key_value is not None:
                post["return"] = f"{self._key_value:.3g}"
            self._progress.update(env_steps, post)
        for hook in self.hooks:
            hook(self)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Write one row (``env_steps``, ``iteration`` and ``metrics``) to metrics.jsonl and TensorBoard."""
        row = {"env_steps": self.env_steps, "iteration": self.iteration}
        row.update({k: float(v) for k, v in metrics.items()})
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), self.env_steps)

    def evaluate(self, policy: Any) -> dict[str, float]:
        """Run ``eval_episodes`` fixed-seed episodes with ``policy``; log and return ``eval/...`` means."""
        if self.make_env is None or self.cfg.eval_episodes == 0:
            return {}
        env = self.make_env(self.cfg.eval_episodes, self.cfg.eval_seed)
        try:
            per_ep = evaluate(policy, env, seed=self.cfg.eval_seed, deterministic=self.cfg.eval_deterministic)
        finally:
            env.close()
        out = {f"eval/{k}": m for k, (m, _) in summarise(per_ep).items()}
        groups = list(env.spec.groups)
        out["eval/episode_return"] = out[f"eval/episode_return/{groups[0]}"]
        self.log_metrics(out)
        self.last_eval = out
        self._last_eval_steps = self.env_steps
        log.info("eval at %d env steps: %s", self.env_steps, ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
        return out

    def maybe_evaluate(self, policy: Any) -> dict[str, float] | None:
        """Evaluate when ``eval_every`` env steps have passed since the last evaluation, or at the end of the budget."""
        if self.stop_requested:
            return None
        every = self.cfg.eval_every
        due = every > 0 and self.env_steps // every > self._last_eval_steps // every
        at_end = self.env_steps >= self.cfg.env_steps and not self._final_eval_done
        if not (due or at_end):
            return None
        self._final_eval_done = at_end or self._final_eval_done
        if at_end and self._last_eval_steps == self.env_steps and self.last_eval:
            return self.last_eval
        return self.evaluate(policy)

    def maybe_checkpoint(self, snapshot: Callable[[], dict[str, Any]]) -> Path | None:
        """Save ``snapshot()`` when due: every ``checkpoint_every`` env steps, at the end, or when stopping."""
        if self.checkpoint_dir is None:
            return None
        every = self.cfg.checkpoint_every
        due = every > 0 and self.env_steps // every > self._last_ckpt_steps // every
        if not (due or self.finished):
            return None
        return self.checkpoint(snapshot())

    def checkpoint(self, state: dict[str, Any]) -> Path:
        """Write a checkpoint of the trainer ``state`` (must contain ``policy``) plus the run's own state."""
        if self.checkpoint_dir is None:
            raise ckpt.CheckpointError("this run has no directory to write checkpoints to")
        if "policy" not in state:
            raise ValueError("a trainer snapshot must contain the 'policy' state (maestro eval/render load it)")
        payload = {
            "state": state,
            "run": {
                "env_steps": self.env_steps,
                "iteration": self.iteration,
                "elapsed": self.elapsed,
                "last_eval_steps": self._last_eval_steps,
                "rng": capture_rng(),
            },
            "config": self.config,
        }
        path = ckpt.save_atomic(payload, self.checkpoint_dir / ckpt.checkpoint_name(self.env_steps))
        ckpt.prune(self.checkpoint_dir, self.cfg.keep_checkpoints)
        self._last_ckpt_steps = self.env_steps
        self.last_checkpoint = path
        log.info("checkpoint %s", path)
        return path
