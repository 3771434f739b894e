"""Data-parallel MADDPG (Zhou & Chen, "Distributed MADDPG", ``papers/002`` Sec. IV, method 1).

"The same networks were duplicated on multiple workers and each worker is trained using different
micro-batches of transitions. Gradient is calculated respectively on every worker, and sent to the
server to aggregate and then sent back to each worker for the following update."

``K`` replicas (Ray actors) each step their own env copies with the shared policy into their own
replay buffer (``buffer_size / K`` each). An update is ``maddpg.update`` cut at its two optimiser
steps (``maddpg.critic_loss`` / ``maddpg.actor_loss``): every replica computes the gradients of its
micro-batch of ``batch_size / K`` transitions per learner, the gradients are averaged over the
replicas, and every replica applies that same average (per-agent norm clipping, Adam, soft target
updates). The mean of the micro-batch gradients is the gradient of the ``batch_size`` minibatch, and
identical inputs to identical deterministic ops keep the replicas bit-identical (tested with exact
equality). The update schedule (``schedule``: warmup, ``update_every``, ``updates_per_step`` credit)
is ``train_maddpg``'s over the env steps of all replicas, the same for both transports.

Two gradient transports (``distributed.transport``):

``allreduce`` (default). The replicas form a ``torch.distributed`` process group with torch's own
gloo backend (TCP store on replica 0's node, a fresh free port per group, rank ``k`` of ``K``). The
coordinator calls ``DataReplica.train_chunk`` once per iteration (``iteration_steps`` vectorised
steps), and each replica runs the coordinator transport's sequence by itself: chunks of
``update_every`` env steps (of all replicas together), each followed by one all-reduce of ``(replay
size, holds a micro-batch)`` and the updates that ``schedule`` derives from the shared credit (the
same inputs on every replica, so all replicas stay in lockstep). An update has two all-reduces
(critic gradients, then actor gradients computed with the updated critic, each flattened into one
buffer with the micro-batch loss appended, summed and divided by the number of replicas that hold a
micro-batch). Every rank receives the same reduced bits (gloo reduces each piece of the buffer once
and distributes it), so the replicas stay bit-identical; with ``K = 2`` the result is bit-identical to
the coordinator transport (``a + b == b + a``, same RNG draws; tested). The coordinator is off the
update path: one Ray round trip per iteration instead of two per update. Across machines, gloo
binds the address the worker's hostname resolves to; set ``GLOO_SOCKET_IFNAME`` in the workers'
environment if that is not routable.

``coordinator``. Gradients go through the coordinator (``ray.get`` of every replica's list, mean in
worker order, ``ray.put`` once, each replica reads the same object): two round trips per update
(critic gradients -> averaged; actor gradients -> averaged), pipelined (the call applying update
``u``'s actor step also returns update ``u+1``'s critic gradients). It needs no process group and
loses nothing when a replica dies mid-update; ``benchmarks/distributed.py`` measures both.

The group (``maestro.distributed.gloo``) cannot lose a member and continue. When a replica dies during
an iteration, Ray restarts it (``ray_utils.WorkerPool``); the survivors' ``train_chunk`` returns
"group broken" instead of raising (after finishing its env steps without updates); the coordinator
copies the weights and optimiser state of the lowest-indexed live replica to every other replica
(with ``K > 2`` survivors may have stopped at different points of an update), destroys the group on
every replica and forms a new one on a new port. The rest of that iteration's updates and its
update credit are dropped. A replica restarted outside ``train_chunk`` (e.g. while checkpointing)
triggers the same resync before the next iteration.

Fault tolerance (both transports): a restarted replica copies the weights and optimiser state of a
healthy replica; its replay buffer refills, and until it holds a micro-batch it contributes no
gradients (the average runs over the replicas that contributed).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from torch import Tensor

from maestro.algos import maddpg as M
from maestro.core.schedules import off_policy_updates
from maestro.distributed.common import DistributedConfig, anneal_workers, apply_grads, combine_stats, make_learner, tree_mean
from maestro.distributed import gloo
from maestro.distributed.genetic import worker_logging
from maestro.distributed.gloo import GroupBroken
from maestro.distributed.ray_utils import WorkerPool, actor_options, first_live, require_ray

log = logging.getLogger("maestro")


def schedule(credit: float, stored: float, n: int, B: int, K: int, warmup: int, updates_per_step: float) -> tuple[int, float]:
    """Updates due after ``n`` vectorised steps of ``K`` replicas with ``B`` env copies each, and the new credit.

    ``train_maddpg``'s schedule (``maestro.core.schedules.off_policy_updates``) over all replicas,
    each call one round (the callers call it once per chunk of ``update_every`` steps): ``n * B * K *
    updates_per_step`` credit once the buffers together hold ``warmup`` transitions (``stored``); every
    whole unit of credit is an update. Pure, so the coordinator (transport ``coordinator``) and every
    replica (``allreduce``) compute the same numbers from the same inputs.
    """
    due, _, credit = off_policy_updates(0, credit, n * B * K, stored, 1, warmup, updates_per_step)
    return due, credit


def flatten_grads(params: list[Tensor], extra: float) -> Tensor:
    """The gradients of ``params`` (zeros where a gradient is ``None``) in one buffer ``(P + 1,)``, ``extra`` last."""
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    return torch.cat(parts + [torch.tensor([extra], dtype=parts[0].dtype, device=parts[0].device)])


def unflatten_grads(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    """Inverse of ``flatten_grads`` without its last element: views of ``flat`` shaped like ``params``."""
    out, o = [], 0
    for p in params:
        out.append(flat[o : o + p.numel()].view_as(p))
        o += p.numel()
    return out


def _set_grads(params: list[Tensor], flat: Tensor) -> None:
    """``p.grad`` = the matching view of the averaged buffer ``flat`` (no copy: ``flat`` is fresh every update)."""
    for p, g in zip(params, unflatten_grads(flat, params)):
        p.grad = g


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
        self.world = 0  # size of the gloo group this replica is in (0: none)

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def anneal(self, progress: float) -> dict[str, float]:
        """Set the optimisers' learning rates for ``progress`` (``maddpg.Learner.anneal``; the same on every replica)."""
        return self.learner.anneal(progress)

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
        self._d = M.learner_batch(lr.buf, lr.lay, self.S, lr.generator)
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

    # ------------------------------------------------------------ transport "allreduce" (``gloo``)
    rendezvous = gloo.member_rendezvous
    join_group = gloo.member_join
    leave_group = gloo.member_leave

    def train_chunk(self, n: int, every: int, credit: float) -> dict[str, Any]:
        """``n`` vectorised env steps in sub-chunks of ``every`` steps, each followed by its updates in
        lockstep with the group (the coordinator transport's sequence of collects and updates).

        Every replica gets the same ``credit``; after each sub-chunk one all-reduce of ``(replay size,
        holds a micro-batch)`` gives every replica the same ``stored`` and number of contributors, so
        ``schedule`` yields the same number of updates everywhere. Returns ``stats``
        (``Learner.stats()``), ``sched`` (``credit``, ``stored``, ``updates``, summed ``critic`` /
        ``actor`` losses, ``collect_s``, ``update_s`` wall-clock of the updates, ``comm_s`` of it in
        all-reduces) and, if the group broke (a peer died or timed out), ``failed`` (the weights may then
        be mid-update: the coordinator resyncs the replicas).
        """
        lr, cfg = self.learner, self.learner.cfg
        sched: dict[str, float] = {"credit": credit, "stored": 0.0, "updates": 0, "critic": 0.0, "actor": 0.0, "collect_s": 0.0, "update_s": 0.0, "comm_s": 0.0}
        out: dict[str, Any] = {"sched": sched}
        done = 0
        try:
            if self.world < 1:
                raise GroupBroken("this replica is in no gloo group (restarted?)")
            while done < n:
                m = min(every, n - done)
                t0 = time.perf_counter()
                for _ in range(m):
                    lr.collect_step()
                done += m
                sched["collect_s"] += time.perf_counter() - t0
                t1 = time.perf_counter()
                sync = torch.tensor([float(len(lr.buf)), float(len(lr.buf) >= self.S)], dtype=torch.float64)
                sched["comm_s"] += gloo.all_reduce(sync)
                stored, contributors = float(sync[0]), int(sync[1])
                k_up, credit = schedule(credit, stored, m, lr.env.num_envs, self.world, cfg.warmup_steps, cfg.updates_per_step)
                sched.update(credit=credit, stored=stored)
                for _ in range(k_up if contributors else 0):
                    lc, la, comm = self._update_allreduce(contributors)
                    sched["critic"] += lc
                    sched["actor"] += la
                    sched["comm_s"] += comm
                    sched["updates"] += 1
                sched["update_s"] += time.perf_counter() - t1
        except GroupBroken as err:
            out["failed"] = str(err)
            for _ in range(n - done):  # finish the env steps: the run's step count stays exact
                lr.collect_step()
        out["stats"] = lr.stats()
        out["stats"]["replay_size"] = float(len(lr.buf))
        return out

    def _update_allreduce(self, contributors: int) -> tuple[float, float, float]:
        """One synchronous update: critic gradients of the micro-batch ``(L, S/K, ...)`` all-reduced and
        applied, then actor gradients on the same micro-batch. A replica without a micro-batch adds zeros.
        Returns the averaged critic and actor losses (per learner) and the seconds spent in all-reduces."""
        lr = self.learner
        L = lr.lay.n_learners
        comm = 0.0
        d = M.learner_batch(lr.buf, lr.lay, self.S, lr.generator) if len(lr.buf) >= self.S else None
        # ---- critics
        if d is not None:
            loss, _ = M.critic_loss(lr.cfg, lr.policy, lr.nets, lr.lay, d, lr.centralised, lr.generator)
            lr.opts["critic"].zero_grad(set_to_none=True)
            loss.backward()
            flat = flatten_grads(self.critic_params, float(loss.detach()) / L)
        else:
            flat = torch.zeros(sum(p.numel() for p in self.critic_params) + 1)
        comm += gloo.all_reduce(flat)
        flat /= contributors
        _set_grads(self.critic_params, flat)
        apply_grads(self.critic_params, None, lr.opts["critic"], lr.cfg.max_grad_norm)
        l_critic = float(flat[-1])
        # ---- actors (with the updated critic, as in maddpg.update)
        if d is not None:
            loss = M.actor_loss(lr.cfg, lr.policy, lr.nets, lr.lay, d, lr.centralised, lr.generator)
            lr.opts["actor"].zero_grad(set_to_none=True)
            loss.backward()
            flat = flatten_grads(self.actor_params, float(loss.detach()) / L)
        else:
            flat = torch.zeros(sum(p.numel() for p in self.actor_params) + 1)
        comm += gloo.all_reduce(flat)
        flat /= contributors
        _set_grads(self.actor_params, flat)
        apply_grads(self.actor_params, None, lr.opts["actor"], lr.cfg.max_grad_norm, self.actor_groups)
        M.soft_update(lr.nets.target_critic, lr.nets.critic, lr.cfg.tau)
        M.soft_update(lr.nets.target_actors, lr.policy.actors, lr.cfg.tau)
        lr.counters["updates"] += 1
        return l_critic, float(flat[-1]), comm

    # ------------------------------------------------------------ state
    def weights_state(self) -> dict[str, Any]:
        """Policy, nets and optimiser states (what a restarted replica copies)."""
        s = self.learner.state_dict(False)
        return {"policy": s["policy"], "nets": s["nets"], "opts": s["opts"], "updates": s["counters"]["updates"]}

    def load_weights(self, s: dict[str, Any]) -> None:
        """Take another replica's ``weights_state`` (and update count); keeps this replica's env, buffer and RNG."""
        self.learner.load_state_dict(s, env_state=False)
        if "updates" in s:
            self.learner.counters["updates"] = s["updates"]

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
    """Data-parallel MADDPG over ``dcfg.workers`` replicas with ``dcfg.transport`` (see the module docstring); returns the policy.

    The update schedule is ``train_maddpg``'s over the env steps of all replicas (``schedule``):
    ``update_every * updates_per_step`` synchronised updates every ``update_every`` env steps (rounded
    up to whole vectorised steps of all replicas), after ``warmup_steps`` transitions in all buffers
    together. Metrics ``dist/update_s`` (coordinator wall-clock per update, collection excluded) and
    ``dist/comm_share`` (1 - the slowest replica's compute time / that wall-clock).
    """
    ray = require_ray()
    K = dcfg.workers
    S_k = max(1, cfg.batch_size // K)
    T_iter = cfg.iteration_steps or spec.max_steps
    capacity = min(max(1, cfg.buffer_size // K), math.ceil(run.cfg.env_steps / K) + T_iter * num_envs)
    Actor = ray.remote(DataReplica).options(**actor_options(dcfg))
    logdir = None if run.dir is None else str(run.dir / "workers")
    handles = [Actor.remote(cfg, centralised, env_name, env_cfg, num_envs, seed + 1000 * k, device, capacity, S_k, logdir and f"{logdir}/replica{k}.log") for k in range(K)]
    st: dict[str, Any] = {"credit": 0.0, "stored": 0.0}
    allreduce = dcfg.transport == "allreduce"

    def healthy(i: int) -> int:
        j = first_live(handles, i)
        if j is None:
            raise RuntimeError("no healthy data-parallel replica left to copy weights from")
        return j

    def rejoin(i: int) -> None:
        ray.get(handles[i].load_weights.remote(ray.get(handles[healthy(i)].weights_state.remote())))

    def on_lost(i: int) -> None:
        j = healthy(i)
        states = [None if k == i else ray.get(handles[k].state.remote(cfg.checkpoint_replay)) for k in range(K)]
        run.checkpoint({"policy": states[j]["policy"], "replicas": states, "data": dict(st)})

    pool = WorkerPool(handles, [f"replica{k}" for k in range(K)], dcfg, rejoin, on_lost)

    group = {"restarts": 0}

    def form_group() -> None:
        gloo.form_group(pool, K, dcfg.collective_timeout_s, dcfg.max_restarts * K + 2, "data-parallel")
        group["restarts"] = pool.total_restarts

    def resync_and_regroup(why: str) -> None:
        """After a broken group: every replica takes the lowest live replica's weights, then a new group forms."""
        log.warning("the data-parallel gloo group broke (%s); resyncing the replicas and forming a new group", why)
        j = healthy(-1)
        ref = ray.put(ray.get(handles[j].weights_state.remote()))
        pool.call("load_weights", (ref,), only=[k for k in range(K) if k != j])
        form_group()

    if allreduce:
        form_group()
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

    # ---- transport "coordinator": two Ray round trips per update through this process
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

    def chunk_coordinator(n: int, results: list[dict[str, float]]) -> None:
        res = pool.call("collect", (n,))
        results += [r for r in res if r is not None]
        st["stored"] = sum(r["replay_size"] for r in res if r is not None)
        k_up, st["credit"] = schedule(st["credit"], st["stored"], n, B, K, cfg.warmup_steps, cfg.updates_per_step)
        if k_up:
            updates(k_up)

    # ---- transport "allreduce": one Ray round trip per iteration; the replicas all-reduce inside each update
    def iteration_allreduce(n: int, results: list[dict[str, float]]) -> None:
        if pool.total_restarts != group["restarts"]:  # a replica restarted outside a chunk (checkpoint, eval)
            resync_and_regroup("a replica restarted since the group formed")
        t = time.perf_counter()
        res = pool.call("train_chunk", (n, chunk, st["credit"]))
        wall = time.perf_counter() - t
        results += [r["stats"] for r in res if r is not None]
        if any(r is None or "failed" in r for r in res):
            resync_and_regroup(next((r["failed"] for r in res if r is not None and "failed" in r), "a replica died during the chunk"))
            return
        sched = [r["sched"] for r in res]
        if len({(s["credit"], s["stored"], s["updates"]) for s in sched}) != 1:
            raise RuntimeError(f"data-parallel replicas left lockstep: {[(s['credit'], s['stored'], s['updates']) for s in sched]}")
        st["credit"], st["stored"] = sched[0]["credit"], sched[0]["stored"]
        nu = int(sched[0]["updates"])
        if nu:
            timing["update_s"] += wall - max(s["collect_s"] for s in sched)
            timing["compute_s"] += max(s["update_s"] - s["comm_s"] for s in sched)
            timing["updates"] += nu
            losses["critic"] += sched[0]["critic"]
            losses["actor"] += sched[0]["actor"]

    B = num_envs
    chunk = max(1, math.ceil(cfg.update_every / (B * K)))
    while not run.finished:
        results: list[dict[str, float]] = []
        done = 0
        for k in timing:
            timing[k] = 0 if k == "updates" else 0.0
        losses.update(critic=0.0, actor=0.0)
        lrs = anneal_workers(pool, cfg, run)
        if allreduce:  # one call per iteration; the replicas interleave collects and updates by chunks
            iteration_allreduce(T_iter, results)
        else:
            while done < T_iter:
                n = min(chunk, T_iter - done)
                chunk_coordinator(n, results)
                done += n
        metrics = combine_stats(results, spec, prefix_workers=False)
        metrics["train/replay_size"] = st["stored"]
        metrics.update(lrs)
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
