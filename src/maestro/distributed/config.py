"""The ``distributed:`` recipe section (``maestro.distributed``), importable without Ray or torch.

Zhou & Chen, "Distributed MADDPG" (``papers/002``): the paper's methods are the modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["off", "genetic", "data", "model", "model_sampler", "decentralised"]
Transport = Literal["allreduce", "coordinator"]


@dataclass(frozen=True)
class DistributedConfig:
    """The ``distributed:`` section of a recipe (``--set distributed.mode=genetic --set distributed.workers=4``)."""

    mode: Mode = "off"
    """``off`` (single process), ``genetic`` (Distributed Genetic MADDPG, papers/002 Sec. V), ``data``
    (data parallelism, Sec. IV method 1), ``model`` (a worker per agent, method 2) or
    ``model_sampler`` (method 2 plus a sampler worker filling the replay buffer, method 3); for MATRPO
    (papers/004) ``decentralised``: one actor per agent, only neighbour messages cross
    (``maestro.distributed.decentralised``)."""
    workers: int = 2
    """``K`` workers for ``genetic`` and ``data`` (``model`` modes use one worker per ``agents_per_worker`` trained agents)."""
    agents_per_worker: int = 1
    """``model`` modes: trained agents per agent worker. 1 is the paper's method 2 (a worker per agent);
    ``m`` groups the learners into contiguous blocks of ``m`` (the last may be smaller), each block's
    critics and actors stacked in one worker, so a run can have as many agent workers as it has cores."""
    address: str = ""
    """Ray cluster to join (``ray://host:port`` or ``host:port``, also ``--ray-address``); empty: an
    embedded local cluster started for the run and shut down after it."""
    num_cpus: int = 0
    """CPUs of the embedded cluster (0: all CPUs of the machine)."""
    worker_cpus: float = 0.0
    """CPUs each worker reserves in Ray's scheduler (0 lets any number of workers share the CPUs)."""
    transport: Transport = "allreduce"
    """How ``data`` and ``model`` workers exchange what an update needs. ``allreduce``: the workers form a
    ``torch.distributed`` gloo group and exchange inside each update (data: gradients all-reduced;
    model: every worker holds a replica of the env and the replay buffer, and actions and target
    actions are all-gathered); the coordinator calls each worker once per iteration. ``coordinator``:
    everything goes through the coordinator (data: two Ray round trips per update; model: one per
    update and one per env step). Both give the same bits (tested); ``benchmarks/distributed.py``
    measures both. ``model_sampler`` always uses the coordinator."""
    collective_timeout_s: float = 60.0
    """Data-parallel ``allreduce``: seconds a gloo collective (or the group's rendezvous) waits for a
    missing replica before failing, after which the coordinator rebuilds the group."""
    critic_sync_rate: int = 5000
    """Genetic: env steps of each worker between critic syncs (papers/002 Appendix: 5000)."""
    sync_growth: float = 1.0
    """Genetic, adaptive sync rate (papers/002 Sec. VI, future work: "an adaptive critic sync rate that
    decreases as time step increases"): the interval is multiplied by this factor after every sync
    (1.0: the paper's fixed rate; 1.5: 5000, 7500, 11250... env steps)."""
    sync_group: str = ""
    """Genetic: group whose episode return, summed over its agents, ranks the workers (papers/002:
    the predators, ``adversary``); empty: the first group of the env."""
    max_restarts: int = 3
    """Ray restarts of a worker process that died (``max_restarts`` of the actor); exhausted: the run
    writes a checkpoint and stops with ``WorkerLostError``."""
    restart_timeout_s: float = 120.0
    """Seconds to wait for a restarted worker to answer before giving up."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"distributed.workers must be >= 1, got {self.workers}")
        if self.agents_per_worker < 1:
            raise ValueError(f"distributed.agents_per_worker must be >= 1, got {self.agents_per_worker}")
        if self.critic_sync_rate < 1:
            raise ValueError(f"distributed.critic_sync_rate must be >= 1, got {self.critic_sync_rate}")
        if self.sync_growth < 1.0:
            raise ValueError(f"distributed.sync_growth must be >= 1 (the interval only grows), got {self.sync_growth}")
        if self.collective_timeout_s <= 0:
            raise ValueError(f"distributed.collective_timeout_s must be > 0, got {self.collective_timeout_s}")
        if self.max_restarts < 0 or self.num_cpus < 0 or self.worker_cpus < 0:
            raise ValueError("distributed.max_restarts, num_cpus and worker_cpus must be >= 0")


class WorkerLostError(RuntimeError):
    """A worker died and its restarts are exhausted; the run wrote a checkpoint and stopped."""
