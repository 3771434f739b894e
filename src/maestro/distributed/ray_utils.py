"""Ray plumbing: start an embedded local cluster (or join one), shut it down, and a pool of restartable workers.

Ray (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI Applications") runs each
worker as an actor process. ``ray_session`` starts an embedded cluster with the configured CPUs and
no dashboard, bound to loopback, or joins ``address``; it shuts Ray down on exit (also on errors),
but leaves alone a Ray that was already initialised by the caller (a test fixture, a notebook).

``WorkerPool`` holds the actor handles with ``max_restarts``: when a worker process dies (a crash,
``kill -9``), Ray restarts it (the constructor runs again) and ``WorkerPool.call`` notices the
failed call, counts the restart, waits until the new process answers, and hands it to the mode's
``rejoin`` callback (which re-sends the last synced state). When a worker has died more than
``max_restarts`` times, ``WorkerLostError`` is raised (the coordinator checkpoints first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable, Iterator

from maestro.distributed.config import DistributedConfig, WorkerLostError

log = logging.getLogger("maestro")

ACTIVE: list["WorkerPool"] = []
"""Pools of the runs in progress in this process (tests reach the workers' pids through them)."""


def require_ray() -> Any:
    """Import ray, or fail with a message naming the extra to install."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("distributed training needs Ray: pip install 'maestro-marl[distributed]' (ray>=2.9)") from err
    return ray


@contextlib.contextmanager
def ray_session(dcfg: DistributedConfig) -> Iterator[Any]:
    """Initialise Ray for a run: join ``dcfg.address`` or start an embedded local cluster
    (``num_cpus`` CPUs, dashboard off, loopback only); afterwards terminate the workers of every
    ``WorkerPool`` the run created, and shut Ray down if we started it.

    This is the one place workers are terminated, on success and on every error (a refused
    checkpoint during set-up, ``WorkerLostError``, Ctrl-C): the modes' own code has no clean-up."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting over the network
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if dcfg.address:
            ray.init(address=dcfg.address, **kw)
        else:
            # address="local": always a new embedded cluster, never a stale one recorded under /tmp/ray
            ray.init(address="local", num_cpus=dcfg.num_cpus or os.cpu_count() or 1, _node_ip_address="127.0.0.1", **kw)
        started = True
    n_active = len(ACTIVE)
    try:
        yield ray
    finally:
        for pool in ACTIVE[n_active:]:  # the pools this run created (kill_all removes each from ACTIVE)
            pool.kill_all()
        if started:
            ray.shutdown()


def actor_options(dcfg: DistributedConfig, **extra: Any) -> dict[str, Any]:
    """Ray actor options shared by every worker: restarts, reserved CPUs, spread over nodes."""
    opts = {"max_restarts": dcfg.max_restarts, "max_task_retries": 0, "num_cpus": dcfg.worker_cpus, "scheduling_strategy": "SPREAD"}
    opts.update(extra)
    return opts


def first_live(handles: list[Any], skip: int = -1) -> int | None:
    """Index of the first worker other than ``skip`` that answers ``ping`` within 10 s; ``None`` if none does."""
    ray = require_ray()
    for j, h in enumerate(handles):
        if j != skip:
            try:
                ray.get(h.ping.remote(), timeout=10)
                return j
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue
    return None


class WorkerPool:
    """Restartable Ray actors (see the module docstring).

    Args:
        handles: actor handles (each must have ``ping()`` and ``pid()`` remote methods).
        names: labels for logs and errors (``worker0``, ``agent adversary_1``, ``sampler``).
        dcfg: restarts and timeouts.
        rejoin: ``rejoin(index)`` re-sends the state a restarted worker needs (mode specific).
        on_lost: ``on_lost(index)`` called once before ``WorkerLostError`` (writes the checkpoint).
    """

    def __init__(self, handles: list[Any], names: list[str], dcfg: DistributedConfig, rejoin: Callable[[int], None] | None = None, on_lost: Callable[[int], None] | None = None) -> None:
        self.ray = require_ray()
        self.handles, self.names, self.dcfg = handles, names, dcfg
        self.rejoin, self.on_lost = rejoin, on_lost
        self.restarts = [0] * len(handles)
        self.total_restarts = 0
        ACTIVE.append(self)

    def __len__(self) -> int:
        return len(self.handles)

    def pids(self) -> list[int]:
        """Process ids of the workers (tests kill them)."""
        return self.ray.get([h.pid.remote() for h in self.handles])

    def call(self, method: str, args: list[tuple] | tuple = (), only: list[int] | None = None) -> list[Any]:
        """Call ``method`` on every worker (``args`` one tuple for all, or a list of per-worker tuples);
        returns the results, ``None`` for a worker that died during the call (it has been restarted and
        has rejoined by the time this returns)."""
        idx = list(range(len(self.handles))) if only is None else only
        per = args if isinstance(args, list) else [args] * len(self.handles)
        refs = {i: getattr(self.handles[i], method).remote(*per[i]) for i in idx}
        out: list[Any] = [None] * len(self.handles)
        failed = []
        for i, ref in refs.items():
            try:
                out[i] = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as err:
                failed.append((i, err))
        for i, err in failed:
            self.recover(i, err)
        return [out[i] for i in idx] if only is not None else out

    def recover(self, i: int, err: BaseException) -> None:
        """Count a death of worker ``i``, wait for Ray's restart and let it rejoin; raise when exhausted."""
        ray = self.ray
        self.restarts[i] += 1
        self.total_restarts += 1
        name = self.names[i]
        if self.restarts[i] > self.dcfg.max_restarts:
            self._lost(i, f"{name} died ({type(err).__name__}) and its {self.dcfg.max_restarts} restarts (distributed.max_restarts) are exhausted")
        log.warning("%s died (%s); waiting for Ray to restart it (restart %d of %d)", name, type(err).__name__, self.restarts[i], self.dcfg.max_restarts)
        deadline = time.monotonic() + self.dcfg.restart_timeout_s
        while True:
            try:
                ray.get(self.handles[i].ping.remote(), timeout=10.0)
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                if time.monotonic() > deadline:
                    self._lost(i, f"{name} did not come back within {self.dcfg.restart_timeout_s:.0f} s after dying: {type(e).__name__}")
            time.sleep(0.2)
        if self.rejoin is not None:
            self.rejoin(i)
        log.warning("%s restarted and rejoined from the last sync point", name)

    def _lost(self, i: int, why: str) -> None:
        log.error("%s", why)
        if self.on_lost is not None:
            self.on_lost(i)
        raise WorkerLostError(f"{why}; the run stopped after writing a checkpoint (resume with `maestro train --resume RUN`)")

    def kill_all(self) -> None:
        """Terminate every worker process (no restart)."""
        if self in ACTIVE:
            ACTIVE.remove(self)
        for h in self.handles:
            with contextlib.suppress(Exception):
                self.ray.kill(h, no_restart=True)
