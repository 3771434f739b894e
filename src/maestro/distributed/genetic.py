"""Distributed Genetic MADDPG (Zhou & Chen, "Distributed MADDPG", ``papers/002`` Sec. V).

``K`` Ray workers each run the whole MADDPG algorithm (``common.Learner``: ``maddpg.explore``,
``maddpg.update``, a replay buffer) on their own env copies and seed. Every ``critic_sync_rate`` env
steps of each worker (5000 in the paper's appendix) the coordinator asks each worker for its mean
episode reward since the previous sync (the paper's metric: the predators' returns summed over the
predators, ``sync_group``), picks the best worker and copies its critics AND target critics to all
others. Actors are never synced ("to preserve unique policies learned by each worker"); each
worker's optimiser moments stay its own.

Adaptive sync rate (the paper's future work, Sec. VI: syncing "is likely to restrict exploration,
which greatly affects the initial stages"): with ``sync_growth > 1`` the interval is multiplied by
``sync_growth`` after every sync, so syncs become rarer as training proceeds.

Fault tolerance: at every sync the coordinator keeps each worker's state (networks, optimisers,
env, counters; not the replay buffer): a worker that dies is restarted by Ray and reloads that
state ("rejoins from the last sync point"), refilling its replay buffer. Checkpoints hold every
worker's state; the ``policy`` of a checkpoint is the last best worker's (what ``maestro eval`` uses).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch

from maestro.algos import maddpg as M
from maestro.distributed.common import DistributedConfig, combine_stats, lr_progress, make_learner
from maestro.distributed.ray_utils import WorkerPool, actor_options, require_ray

log = logging.getLogger("maestro")


def worker_logging(log_path: str | None) -> None:
    """Send this worker process's ``maestro`` log records to ``log_path`` (in the run directory)."""
    if not log_path:
        return
    try:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        h = logging.FileHandler(log_path)
    except OSError:  # a node without the run directory (a remote cluster without a shared disk)
        return
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s pid %(process)d %(message)s"))
    log.addHandler(h)
    log.setLevel(logging.INFO)


class GeneticWorker:
    """One worker of Distributed Genetic MADDPG (a Ray actor): a full MADDPG learner."""

    def __init__(self, cfg: M.Config, centralised: bool, env_name: str, env_cfg: Any, num_envs: int, seed: int, device: str, capacity: int, log_path: str | None = None) -> None:
        torch.set_num_threads(1)
        worker_logging(log_path)
        self.learner = make_learner(cfg, env_name, env_cfg, num_envs, seed, device, centralised, capacity)
        self._window: dict[str, float] = {}  # per group: return summed over its agents, summed over episodes
        self._window_n = 0.0
        log.info("genetic worker started (seed %d)", seed)

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def run(self, n: int, progress: float | None = None) -> dict[str, float]:
        """``n`` vectorised env steps of MADDPG (collect + updates), the learning rates first annealed to
        ``progress`` (the budget fraction spent; ``None``: constant rates); episode/loss statistics."""
        lrs = self.learner.anneal(progress) if progress is not None else {}
        out = {**self.learner.run_steps(n, updates=True), **lrs}
        count = out.get("train/episodes", 0.0)
        if count > 0:
            for g, gs in self.learner.env.spec.groups.items():
                self._window[g] = self._window.get(g, 0.0) + out[f"train/episode_return/{g}"] * gs.n_agents * count
            self._window_n += count
        return out

    def score(self, group: str) -> float:
        """Mean episode return of ``group`` summed over its agents since the last call (the genetic
        selection score, papers/002 Sec. V: "per episode average reward"); ``-inf`` without episodes."""
        score = self._window.get(group, 0.0) / self._window_n if self._window_n > 0 else float("-inf")
        self._window, self._window_n = {}, 0.0
        return score

    def critic_state(self) -> dict[str, Any]:
        return self.learner.critic_state()

    def load_critic_state(self, s: dict[str, Any]) -> None:
        self.learner.load_critic_state(s)

    def state(self, replay: bool) -> dict[str, Any]:
        return self.learner.state_dict(replay)

    def load_state(self, s: dict[str, Any]) -> None:
        self.learner.load_state_dict(s)
        log.info("loaded state (env step %d)", self.learner.counters["env_steps"])

    def policy_state(self) -> dict[str, Any]:
        return self.learner.policy.policy_state()

    def actor_state(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self.learner.policy.actors.state_dict().items()}


class LazyPolicy:
    """A policy fetched from a worker on first use (evaluation only pulls weights when it runs)."""

    def __init__(self, fetch: Any) -> None:
        self._fetch, self._p = fetch, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._p is None:
            self._p = self._fetch()
        return getattr(self._p, name)


def train_genetic(dcfg: DistributedConfig, cfg: M.Config, centralised: bool, env_name: str, env_cfg: Any, spec: Any, run: Any, num_envs: int, seed: int, device: str) -> M.Policy:
    """Distributed Genetic MADDPG with ``dcfg.workers`` workers; returns the best worker's policy.

    Budget: ``run.cfg.env_steps`` counts the env steps of all workers. Each iteration every worker
    steps its ``B`` copies ``iteration_steps`` times (one episode length by default) with MADDPG updates.
    """
    ray = require_ray()
    K = dcfg.workers
    group = dcfg.sync_group or list(spec.groups)[0]
    if group not in spec.groups:
        raise ValueError(f"distributed.sync_group {group!r} is not a group of env {spec.name!r} (groups: {list(spec.groups)})")
    T_iter = cfg.iteration_steps or spec.max_steps
    capacity = min(cfg.buffer_size, math.ceil(run.cfg.env_steps / K) + T_iter * num_envs)
    Actor = ray.remote(GeneticWorker).options(**actor_options(dcfg))
    logdir = None if run.dir is None else str(run.dir / "workers")
    handles = [Actor.remote(cfg, centralised, env_name, env_cfg, num_envs, seed + 1000 * k, device, capacity, logdir and f"{logdir}/worker{k}.log") for k in range(K)]
    st: dict[str, Any] = {"since_sync": 0, "interval": float(dcfg.critic_sync_rate), "syncs": 0, "best": 0}
    last: list[Any] = [None] * K

    def rejoin(i: int) -> None:
        ray.get(handles[i].load_state.remote(last[i]))

    def on_lost(i: int) -> None:
        states = []
        for j, h in enumerate(handles):
            try:
                states.append(last[i] if j == i else ray.get(h.state.remote(cfg.checkpoint_replay)))
            except ray.exceptions.RayActorError:
                states.append(last[j])
        run.checkpoint(_snapshot(states))

    def _snapshot(states: list[dict[str, Any]]) -> dict[str, Any]:
        return {"policy": states[st["best"]]["policy"], "workers": states, "genetic": dict(st)}

    pool = WorkerPool(handles, [f"worker{k}" for k in range(K)], dcfg, rejoin, on_lost)
    resumed = run.restore()
    if resumed is None:
        last = pool.call("state", (False,))
    else:
        if len(resumed["workers"]) != K:
            raise ValueError(f"the checkpoint has {len(resumed['workers'])} genetic workers, distributed.workers is {K}")
        st.update(resumed["genetic"])
        pool.call("load_state", [(s,) for s in resumed["workers"]])
        last = [{k: v for k, v in s.items() if k != "replay"} for s in resumed["workers"]]

    def sync() -> dict[str, float]:
        scores = pool.call("score", (group,))
        valid = [(s, i) for i, s in enumerate(scores) if s is not None]
        best = max((s, -i) for s, i in valid)[1] * -1
        ref = ray.put(ray.get(handles[best].critic_state.remote()))
        pool.call("load_critic_state", (ref,), only=[i for i in range(K) if i != best])
        st["best"], st["syncs"], st["since_sync"] = best, st["syncs"] + 1, 0
        st["interval"] *= dcfg.sync_growth
        for i, s in enumerate(pool.call("state", (False,))):
            if s is not None:
                last[i] = s
        log.info("critic sync %d: best worker %d (mean %s return %s); next sync in %d env steps", st["syncs"], best, group, ", ".join(f"{s:.4g}" if s is not None else "dead" for s in scores), st["interval"])
        out = {"sync/best_worker": float(best), "sync/count": float(st["syncs"])}
        out.update({f"sync/score/worker{i}": s for i, s in enumerate(scores) if s is not None and math.isfinite(s)})
        return out

    def snapshot() -> dict[str, Any]:
        states = pool.call("state", (cfg.checkpoint_replay,))
        return _snapshot([s if s is not None else last[i] for i, s in enumerate(states)])

    policy = LazyPolicy(lambda: M.Policy.from_state(ray.get(handles[st["best"]].policy_state.remote())))
    while not run.finished:
        results = pool.call("run", (T_iter, lr_progress(cfg, run)))
        metrics = combine_stats([r for r in results if r is not None], spec)
        st["since_sync"] += T_iter * num_envs
        if st["since_sync"] >= st["interval"]:
            metrics.update(sync())
        metrics["dist/restarts"] = float(pool.total_restarts)
        metrics["dist/sync_interval"] = float(st["interval"])
        run.step(T_iter * num_envs * K, metrics)
        policy = LazyPolicy(lambda: M.Policy.from_state(ray.get(handles[st["best"]].policy_state.remote())))
        run.maybe_evaluate(policy)
        run.maybe_checkpoint(snapshot)
    return M.Policy.from_state(ray.get(handles[st["best"]].policy_state.remote()))
