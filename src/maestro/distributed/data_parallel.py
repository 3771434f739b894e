"""Data-parallel MADDPG (Zhou & Chen, "Distributed MADDPG", ``papers/002`` Sec. IV, method 1).

"The same networks were duplicated on multiple workers and each worker is trained using different
micro-batches of transitions. Gradient is calculated respectively on every worker, and sent to the
server to aggregate and then sent back to each worker for the following update."

``K`` replicas (Ray actors) each step their own env copies with the shared policy into their own
replay buffer (``buffer_size / K`` each). An update is ``maddpg.update`` cut at its two optimiser
steps (``maddpg.critic_loss`` / ``maddpg.actor_loss``): every replica computes the gradients of its
micro-batch of ``batch_size / K`` transitions per learner, the coordinator averages them (in worker
order, so the result is one tensor list), and every replica applies that same average (per-agent
norm clipping, Adam, soft target updates). The mean of the micro-batch gradients is the gradient of
the ``batch_size`` minibatch, and identical inputs to identical deterministic ops keep the replicas
bit-identical (tested with exact equality).

Transport: gradients go through the coordinator (``ray.get`` of every replica's list, mean,
``ray.put`` once, each replica reads the same object). Per update there are two round trips (critic
gradients -> averaged; actor gradients, computed with the updated critic as in ``maddpg.update`` ->
averaged), pipelined: the call applying update ``u``'s actor step also returns update ``u+1``'s
critic gradients. Chosen over torch.distributed gloo all-reduce: a gloo process group cannot lose a
member and continue (a restarted replica would need every process to rebuild the group), and
``ray.util.collective``'s gloo backend needs ``pygloo``, which has no wheels for current Pythons;
``benchmarks/distributed.py`` measures what the coordinator path costs (``comm share``).

Fault tolerance: a replica that dies is restarted by Ray and copies the weights and optimiser state
of a healthy replica (its replay buffer refills; until it holds a micro-batch it only collects, and
the average runs over the replicas that contributed).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch

from maestro.algos import maddpg as M
from maestro.distributed.common import DistributedConfig, apply_grads, combine_stats, make_learner, tree_mean
from maestro.distributed.genetic import worker_logging
from maestro.distributed.ray_utils import WorkerPool, actor_options, require_ray

log = logging.getLogger("maestro")


class DataReplica:
    """One data-parallel replica (a Ray actor): env copies, replay buffer and a full MADDPG model."""

    def __init__(self, cfg: M.Config, centralised: bool, env_name: str, env_cfg: Any, num_envs: int, seed: int, device: str, capacity: int, micro_batch: int, log_path: str | None = None) -> None:
        torch.set_num_threads(1)
        worker_logging(log_path)
        if cfg.policy_inference:
            raise ValueError("distributed.mode=data does not support policy_inference")
        self.learner = make_learner(cfg, env_name, env_cfg, num_envs, seed, device, centralised, capacity)
        self.S = micro_batch
        self._d: dict[str, torch.Tensor] | None = None
        lr = self.learner
        self.critic_params = list(lr.nets.critic.parameters())
        self.actor_params = list(lr.policy.actors.parameters())
        self.actor_groups = [list(lr.policy.actors[g].parameters()) for g in lr.lay.trained]

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def collect(self, n: int) -> dict[str, float]:
        """``n`` vectorised env steps (no updates); statistics plus ``replay_size``."""
        out = self.learner.run_steps(n, updates=False)
        out["replay_size"] = float(len(self.learner.buf))
        return out

    def critic_grads(self) -> tuple[list[torch.Tensor] | None, float, float]:
        """Sample a micro-batch ``(L, S/K, ...)`` and return the critics' gradients, the loss and the compute seconds
        (``None`` gradients while the replay buffer holds fewer than a micro-batch)."""
        t = time.perf_counter()
        lr = self.learner
        if len(lr.buf) < self.S:
            self._d = None
            return None, 0.0, time.perf_counter() - t
        self._d = M._learner_batch(lr.buf, lr.lay, self.S, lr.generator)
        loss, _ = M.critic_loss(lr.cfg, lr.policy, lr.nets, lr.lay, self._d, lr.centralised, lr.generator)
        lr.opts["critic"].zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad for p in self.critic_params], float(loss) / lr.lay.n_learners, time.perf_counter() - t

    def apply_critic(self, avg: list[torch.Tensor]) -> tuple[list[torch.Tensor] | None, float, float]:
        """Apply the averaged critic gradients (clip, Adam), then return the actors' gradients on the same micro-batch."""
        t = time.perf_counter()
        lr = self.learner
        apply_grads(self.critic_params, avg, lr.opts["critic"], lr.cfg.max_grad_norm)
        if self._d is None:
            return None, 0.0, time.perf_counter() - t
        loss = M.actor_loss(lr.cfg, lr.policy, lr.nets, lr.lay, self._d, lr.centralised, lr.generator)
        lr.opts["actor"].zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad for p in self.actor_params], float(loss) / lr.lay.n_learners, time.perf_counter() - t

    def apply_actor(self, avg: list[torch.Tensor], next_critic: bool) -> tuple[Any, float, float]:
        """Apply the averaged actor gradients and the soft target updates; with ``next_critic``, also
        return the next update's critic gradients (the pipelined round trip)."""
        t = time.perf_counter()
        lr = self.learner
        apply_grads(self.actor_params, avg, lr.opts["actor"], lr.cfg.max_grad_norm, self.actor_groups)
        M.soft_update(lr.nets.target_critic, lr.nets.critic, lr.cfg.tau)
        M.soft_update(lr.nets.target_actors, lr.policy.actors, lr.cfg.tau)
        lr.counters["updates"] += 1
        dt = time.perf_counter() - t
        if not next_critic:
            return None, 0.0, dt
        g, loss, dt2 = self.critic_grads()
        return g, loss, dt + dt2

    def weights_state(self) -> dict[str, Any]:
        """Policy, nets and optimiser states (what a restarted replica copies)."""
        s = self.learner.state_dict(False)
        return {"policy": s["policy"], "nets": s["nets"], "opts": s["opts"]}

    def load_weights(self, s: dict[str, Any]) -> None:
        self.learner.load_state_dict(s, env_state=False)

    def state(self, replay: bool) -> dict[str, Any]:
        return self.learner.state_dict(replay)

    def load_state(self, s: dict[str, Any]) -> None:
        self.learner.load_state_dict(s)

    def policy_state(self) -> dict[str, Any]:
        return self.learner.policy.policy_state()

    def flat_params(self) -> torch.Tensor:
        """Every parameter and Adam moment, flattened (tests compare replicas with exact equality)."""
        lr = self.learner
        parts = [p.detach().reshape(-1) for p in list(lr.policy.parameters()) + list(lr.nets.parameters())]
        for o in lr.opts.values():
            for s in o.state.values():
                parts += [v.reshape(-1).float() for v in s.values() if torch.is_tensor(v)]
        return torch.cat(parts)


def _mean_valid(results: list[Any]) -> tuple[list[torch.Tensor] | None, float, float]:
    grads = [r[0] for r in results if r is not None and r[0] is not None]
    losses = [r[1] for r in results if r is not None and r[0] is not None]
    compute = max((r[2] for r in results if r is not None), default=0.0)
    if not grads:
        return None, 0.0, compute
    return tree_mean(grads), sum(losses) / len(losses), compute


def train_data_parallel(dcfg: DistributedConfig, cfg: M.Config, centralised: bool, env_name: str, env_cfg: Any, spec: Any, run: Any, num_envs: int, seed: int, device: str) -> M.Policy:
    """Data-parallel MADDPG over ``dcfg.workers`` replicas (see the module docstring); returns the policy.

    The update schedule is ``train_maddpg``'s over the env steps of all replicas: ``update_every *
    updates_per_step`` synchronised updates every ``update_every`` env steps (rounded up to whole
    vectorised steps of all replicas), after ``warmup_steps`` transitions in all buffers together.
    """
    ray = require_ray()
    K = dcfg.workers
    S_k = max(1, cfg.batch_size // K)
    T_iter = cfg.iteration_steps or spec.max_steps
    capacity = min(max(1, cfg.buffer_size // K), math.ceil(run.cfg.env_steps / K) + T_iter * num_envs)
    Actor = ray.remote(DataReplica).options(**actor_options(dcfg))
    logdir = None if run.dir is None else str(run.dir / "workers")
    handles = [Actor.remote(cfg, centralised, env_name, env_cfg, num_envs, seed + 1000 * k, device, capacity, S_k, logdir and f"{logdir}/replica{k}.log") for k in range(K)]
    alive = [True] * K
    st: dict[str, Any] = {"credit": 0.0, "stored": 0.0}

    def healthy(i: int) -> int:
        for j in range(K):
            if j != i:
                try:
                    ray.get(handles[j].ping.remote(), timeout=10)
                    return j
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    continue
        raise RuntimeError("no healthy data-parallel replica left to copy weights from")

    def rejoin(i: int) -> None:
        ray.get(handles[i].load_weights.remote(ray.get(handles[healthy(i)].weights_state.remote())))

    def on_lost(i: int) -> None:
        alive[i] = False
        j = healthy(i)
        states = [None if k == i else ray.get(handles[k].state.remote(cfg.checkpoint_replay)) for k in range(K)]
        run.checkpoint({"policy": states[j]["policy"], "replicas": states, "data": dict(st)})

    pool = WorkerPool(handles, [f"replica{k}" for k in range(K)], dcfg, rejoin, on_lost)
    resumed = run.restore()
    if resumed is None:
        ref = ray.put(ray.get(handles[0].weights_state.remote()))
        pool.call("load_weights", (ref,), only=list(range(1, K)))  # identical start
    else:
        reps = resumed["replicas"]
        if len(reps) != K:
            raise ValueError(f"the checkpoint has {len(reps)} data-parallel replicas, distributed.workers is {K}")
        full = next(s for s in reps if s is not None)
        pool.call("load_state", [(s if s is not None else full,) for s in reps])
        st.update(resumed["data"])

    timing = {"update_s": 0.0, "compute_s": 0.0, "updates": 0}
    losses = {"critic": 0.0, "actor": 0.0}

    def round_trip(method: str, args: tuple) -> tuple[list[torch.Tensor] | None, float, float]:
        t = time.perf_counter()
        avg, loss, compute = _mean_valid(pool.call(method, args))
        timing["compute_s"] += compute
        timing["update_s"] += time.perf_counter() - t
        return avg, loss, compute

    def updates(n: int) -> None:
        avg_c, lc, _ = round_trip("critic_grads", ())
        for u in range(n):
            if avg_c is None:
                return
            t = time.perf_counter()
            ref = ray.put(avg_c)
            timing["update_s"] += time.perf_counter() - t
            avg_a, la, _ = round_trip("apply_critic", (ref,))
            if avg_a is None:
                return
            t = time.perf_counter()
            ref = ray.put(avg_a)
            timing["update_s"] += time.perf_counter() - t
            losses["critic"] += lc
            losses["actor"] += la
            timing["updates"] += 1
            avg_c, lc, _ = round_trip("apply_actor", (ref, u < n - 1))

    B = num_envs
    chunk = max(1, math.ceil(cfg.update_every / (B * K)))
    try:
        while not run.finished:
            results = []
            done = 0
            for k in timing:
                timing[k] = 0 if k == "updates" else 0.0
            losses.update(critic=0.0, actor=0.0)
            while done < T_iter:
                n = min(chunk, T_iter - done)
                res = pool.call("collect", (n,))
                done += n
                results += [r for r in res if r is not None]
                st["stored"] = sum(r["replay_size"] for r in res if r is not None)
                if st["stored"] >= max(cfg.warmup_steps, 1):
                    st["credit"] += n * B * K * cfg.updates_per_step
                k_up = int(st["credit"])
                st["credit"] -= k_up
                if k_up:
                    updates(k_up)
            metrics = combine_stats(results, spec, prefix_workers=False)
            metrics["train/replay_size"] = st["stored"]
            if timing["updates"]:
                nu = timing["updates"]
                metrics["loss/critic"], metrics["loss/actor"] = losses["critic"] / nu, losses["actor"] / nu
                metrics["dist/update_s"] = timing["update_s"] / nu
                metrics["dist/comm_share"] = max(0.0, 1.0 - timing["compute_s"] / max(timing["update_s"], 1e-12))
            metrics["dist/restarts"] = float(pool.total_restarts)
            run.step(T_iter * B * K, metrics)
            run.maybe_evaluate(_LazyPolicy(ray, handles[healthy(-1)]))
            run.maybe_checkpoint(lambda: _snapshot(ray, pool, cfg, st))
        return M.Policy.from_state(ray.get(handles[healthy(-1)].policy_state.remote()))
    finally:
        pool.kill_all()


def _snapshot(ray: Any, pool: WorkerPool, cfg: M.Config, st: dict[str, Any]) -> dict[str, Any]:
    states = pool.call("state", (cfg.checkpoint_replay,))
    full = next(s for s in states if s is not None)
    return {"policy": full["policy"], "replicas": states, "data": dict(st)}


class _LazyPolicy:
    def __init__(self, ray: Any, handle: Any) -> None:
        self._ray, self._h, self._p = ray, handle, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._p is None:
            self._p = M.Policy.from_state(self._ray.get(self._h.policy_state.remote()))
        return getattr(self._p, name)
