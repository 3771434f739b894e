"""Model-parallel MADDPG, with or without a sampler worker (Zhou & Chen, ``papers/002`` Sec. IV, methods 2 and 3).

Method 2: "multiple workers that each contain actor and critic networks of a single agent ... the
respective results, i.e. actions determined by the actors, are sent to a server and the server will
send back to each node all actions to boost the centralized critic models." Method 3: "an
additional worker is used to sample transitions from the environment and store them in the replay
buffer. This parallelizes the process of generating transitions alongside the actual training."

``AgentWorker`` (a Ray actor per trained agent ``i``) holds ``mu_i``, ``Q_i`` and their targets
(``maddpg.StackedMLP`` with one member, ``maddpg.Policy`` restricted to the agent, so that
``maddpg.explore`` does its exploration) and Adam optimisers. Its update is ``maddpg.update``
restricted to learner ``i``: the same ``maddpg.td_loss`` and ``maddpg.policy_loss`` on the
learner's row of the minibatch (losses are sums over learners, clipping and Adam are per member, so
the maths is the single-process update's on the same minibatch and target actions; tested).

Per update, the coordinator draws a learner minibatch ``d`` (``maddpg._learner_batch``: every field
``(L, S, ...)``; ``ray.put`` once, read by every worker); each worker ``j`` computes its target actions
``mu'_j(o'_j)`` on the next observations of every learner's batch, ``(L, S, act_dim)``; the
coordinator assembles ``a' (L, S, A, act_max)`` (frozen groups from their policy) and sends it back;
each worker updates its critic and actor. The exchange is pipelined: the call that updates on
minibatch ``u`` also returns the target actions for minibatch ``u + 1`` (after the soft update), so
an update costs one round trip.

``model``: the coordinator steps the batched env; every env step it sends each worker its agent's
observations ``(B, obs_dim)`` and gathers the exploratory actions (one round trip per env step).
``model_sampler``: a ``SamplerWorker`` (a threaded Ray actor) steps the env with a copy of the
actors and fills its replay buffer while the agents learn; the coordinator fetches minibatches from
it (object refs passed straight to the workers) and pushes the new actors to it after each
iteration (so acting lags learning by at most one iteration).

Not supported here: policy ensembles and policy inference (``ensemble_size > 1``,
``policy_inference``: use ``mode: genetic`` or ``off``). The replay buffer is not checkpointed in
these modes (a resumed run refills it).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from typing import Any

import torch

from maestro.algos import maddpg as M
from maestro.algos.ppo import group_layout
from maestro.core.episodes import EpisodeStats
from maestro.core.replay import ReplayBuffer
from maestro.core.run import env_restore, env_snapshot
from maestro.core.seeding import make_generator, seed_everything
from maestro.distributed.common import DistributedConfig, combine_stats, make_learner
from maestro.distributed.genetic import LazyPolicy, worker_logging
from maestro.distributed.ray_utils import WorkerPool, actor_options, require_ray
from maestro.nn.gumbel import gumbel_softmax, one_hot_sample

log = logging.getLogger("maestro")


class AgentWorker:
    """The actor ``mu_i`` and critic ``Q_i`` of one agent (a Ray actor); see the module docstring.

    Args:
        groups: ``ppo.group_layout`` of the env; trained: the trained groups.
        learner: index ``l`` of this agent among the learners (``AgentLayout.learner_agent[l]`` is its agent).
    """

    def __init__(self, cfg: M.Config, centralised: bool, groups: dict[str, Any], trained: list[str], learner: int, seed: int, log_path: str | None = None) -> None:
        torch.set_num_threads(1)
        worker_logging(log_path)
        seed_everything(seed)
        self.cfg, self.centralised, self.l = cfg, centralised, learner
        self.lay = M.make_layout(groups, trained, 1)
        self.a = self.lay.learner_agent[learner]
        self.g = next(g for g in self.lay.groups if self.lay.offset[g] <= self.a < self.lay.offset[g] + self.lay.groups[g]["n_agents"])
        self.info = dict(groups[self.g], n_agents=1)
        arch = {"hidden": list(cfg.hidden), "ensemble_size": 1, "continuous_head": cfg.continuous_head}
        self.policy = M.Policy({self.g: self.info}, arch)
        self.lay1 = M.make_layout({self.g: self.info}, [self.g], 1)
        lay = self.lay
        in_dim = lay.n_agents * (lay.obs_max + lay.act_max) if centralised else lay.obs_max + lay.act_max
        self.critic = M.StackedMLP(1, in_dim, tuple(cfg.hidden), 1)
        self.target_critic = copy.deepcopy(self.critic)
        self.target_actor = copy.deepcopy(self.policy.actors)
        for p in list(self.target_critic.parameters()) + list(self.target_actor.parameters()):
            p.requires_grad_(False)
        self.opts = {
            "actor": torch.optim.Adam(self.policy.actors.parameters(), lr=cfg.actor_lr, foreach=True),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, foreach=True),
        }
        self.generator = make_generator(seed + 7919, "cpu")
        self.la, self.ar = torch.tensor([self.a]), torch.arange(1)  # this learner's agent, its row: ``td_loss`` / ``policy_loss`` indices

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Exploratory env actions ``(B, ...)`` of this agent for its observations ``(B, *obs_shape)`` (``maddpg.explore``)."""
        B = obs.shape[0]
        hidden = {"sub": {self.g: torch.zeros(B, 1, dtype=torch.long)}, "frozen": {}}
        acts, _, _ = M.explore(self.policy, self.lay1, self.cfg, {self.g: obs[:, None]}, None, hidden, self.generator)
        return acts[self.g][:, 0]

    @torch.no_grad()
    def target(self, d: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
        """``mu'_i(o'_i)`` on every learner's next observations: ``(L, S, act_dim)``."""
        if d is None:
            return None
        L, S = d["next_obs"].shape[:2]
        D = self.info["obs_dim"]
        z = self.target_actor[self.g](d["next_obs"][:, :, self.a, :D].reshape(1, L * S, D)).reshape(L, S, -1)
        return one_hot_sample(z, self.generator) if self.info["discrete"] else self.policy.box(self.g, z)

    def update(self, d: dict[str, torch.Tensor], a_next: torch.Tensor, next_d: dict[str, torch.Tensor] | None) -> tuple[dict[str, float], torch.Tensor | None, float]:
        """One gradient step of ``Q_i`` and ``mu_i`` on row ``l`` of the minibatch ``d`` with target actions
        ``a_next`` ``(L, S, A, act_max)`` (``maddpg.update`` for one learner), the soft updates, then the target
        actions for ``next_d``. Returns (losses, next target actions, compute seconds)."""
        t0 = time.perf_counter()
        cfg, l, a = self.cfg, self.l, self.a
        d1 = {k: d[k][l : l + 1] for k in ("obs", "act", "next_obs", "reward", "terminated")}  # learner l's row (1, S, ...)
        closs, q = M.td_loss(self.critic, self.target_critic, d1, a_next[l : l + 1], self.la, self.ar, self.centralised, cfg.gamma)
        self.opts["critic"].zero_grad(set_to_none=True)
        closs.backward()
        if cfg.max_grad_norm > 0:
            M.clip_grad_norm_per_member(list(self.critic.parameters()), cfg.max_grad_norm)
        self.opts["critic"].step()
        z = self.policy.actors[self.g](d1["obs"][:, :, a, : self.info["obs_dim"]])
        reg = z.pow(2).mean((1, 2)).sum()
        own_a = gumbel_softmax(z, cfg.gumbel_temperature, hard=True, generator=self.generator) if self.info["discrete"] else self.policy.box(self.g, z)
        aloss = M.policy_loss(self.critic, d1, M.pad_last(own_a, self.lay.act_max), reg, self.la, self.ar, self.centralised, cfg.actor_reg)
        self.opts["actor"].zero_grad(set_to_none=True)
        aloss.backward()
        if cfg.max_grad_norm > 0:
            M.clip_grad_norm_per_member(list(self.policy.actors.parameters()), cfg.max_grad_norm)
        self.opts["actor"].step()
        M.soft_update(self.target_critic, self.critic, cfg.tau)
        M.soft_update(self.target_actor, self.policy.actors, cfg.tau)
        nt = self.target(next_d)
        return {"critic": float(closs.detach()), "actor": float(aloss.detach()), "q": float(q.detach().mean())}, nt, time.perf_counter() - t0

    def actor_state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.policy.actors[self.g].state_dict().items()}

    def state(self) -> dict[str, Any]:
        return {
            "actor": self.policy.state_dict(),
            "target_actor": self.target_actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "generator": self.generator.get_state(),
        }

    def load_state(self, s: dict[str, Any]) -> None:
        self.policy.load_state_dict(s["actor"])
        self.target_actor.load_state_dict(s["target_actor"])
        self.critic.load_state_dict(s["critic"])
        self.target_critic.load_state_dict(s["target_critic"])
        for k, o in self.opts.items():
            o.load_state_dict(s["opts"][k])
        self.generator.set_state(s["generator"])


class SamplerWorker:
    """The sampler of method 3 (a threaded Ray actor): env copies, a copy of the actors, the replay buffer.

    ``collect`` and ``sample`` run in different threads of the actor; a lock orders the buffer's
    writes and reads at env-step granularity."""

    def __init__(self, cfg: M.Config, centralised: bool, env_name: str, env_cfg: Any, num_envs: int, seed: int, device: str, capacity: int, log_path: str | None = None) -> None:
        torch.set_num_threads(1)
        worker_logging(log_path)
        self.learner = make_learner(cfg, env_name, env_cfg, num_envs, seed, device, centralised, capacity)
        self.lock = threading.Lock()
        self.sample_gen = make_generator(seed + 104729, device)

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def collect(self, n: int) -> dict[str, float]:
        for _ in range(n):
            with self.lock:
                self.learner.collect_step()
        with self.lock:
            out = self.learner.stats()
            out["replay_size"] = float(len(self.learner.buf))
        return out

    def sample(self, S: int) -> dict[str, torch.Tensor]:
        with self.lock:
            return M._learner_batch(self.learner.buf, self.learner.lay, S, self.sample_gen)

    def set_actors(self, state: dict[str, torch.Tensor]) -> None:
        with self.lock:
            self.learner.policy.actors.load_state_dict(state)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return self.learner.state_dict(False)

    def load_state(self, s: dict[str, Any]) -> None:
        with self.lock:
            self.learner.load_state_dict(s)


def train_model_parallel(dcfg: DistributedConfig, cfg: M.Config, centralised: bool, env_name: str, env_cfg: Any, env: Any, run: Any, seed: int, sampler: bool) -> M.Policy:
    """Model-parallel MADDPG (``sampler``: with the sampler worker); returns the assembled policy."""
    ray = require_ray()
    if cfg.ensemble_size > 1 or cfg.policy_inference:
        raise ValueError("distributed.mode=model/model_sampler supports neither ensemble_size > 1 nor policy_inference (use mode genetic or off)")
    spec, B, device = env.spec, env.num_envs, env.device
    groups = group_layout(spec)
    frozen = {g: M.load_frozen_policy(p, device) for g, p in cfg.frozen.items()}
    for g, p in frozen.items():
        M.check_frozen_policy(p, g, groups[g], spec.name, str(cfg.frozen[g]))
    arch = {"hidden": list(cfg.hidden), "ensemble_size": 1, "continuous_head": cfg.continuous_head}
    policy = M.Policy(groups, arch, frozen).to(device)
    lay = M.make_layout(groups, policy.trained, 1)
    L = lay.n_learners
    T_iter = cfg.iteration_steps or spec.max_steps
    capacity = min(cfg.buffer_size, run.cfg.env_steps + T_iter * B)
    logdir = None if run.dir is None else str(run.dir / "workers")
    Agent = ray.remote(AgentWorker).options(**actor_options(dcfg))
    handles = [Agent.remote(cfg, centralised, groups, policy.trained, l, seed + 1000 * l, logdir and f"{logdir}/agent{l}.log") for l in range(L)]
    last: list[Any] = [None] * L
    st: dict[str, Any] = {"credit": 0.0, "since_round": 0}
    samp = None
    samp_last: dict[str, Any] = {}

    def snapshot() -> dict[str, Any]:
        states = pool.call("state")
        for i, s in enumerate(states):
            if s is not None:
                last[i] = s
        assemble_policy()
        snap = {"policy": policy.policy_state(), "agents": list(last), "model": dict(st)}
        if samp is not None:
            snap["sampler"] = spool.call("state")[0] or samp_last.get("state")
        else:
            snap["env"], snap["cur"] = env_snapshot(env), cur
        return snap

    def on_lost(i: int) -> None:
        snap = {"policy": policy.policy_state(), "agents": list(last), "model": dict(st)}
        if samp is not None:
            snap["sampler"] = samp_last.get("state")
        else:
            snap["env"], snap["cur"] = env_snapshot(env), cur
        run.checkpoint(snap)

    pool = WorkerPool(handles, [f"agent{l}" for l in range(L)], dcfg, lambda i: ray.get(handles[i].load_state.remote(last[i])), on_lost)

    def assemble_policy() -> dict[str, torch.Tensor]:
        parts = pool.call("actor_state")
        full = {}
        for g in policy.trained:
            s, e = lay.learner_block(g)
            for k in parts[s]:
                full[f"{g}.{k}"] = torch.cat([parts[l][k] for l in range(s, e)], 0)
        policy.actors.load_state_dict(full)
        return full

    # ---- collection: local (method 2) or the sampler worker (method 3)
    buf = gen = cur = None
    if sampler:
        Samp = ray.remote(SamplerWorker).options(**actor_options(dcfg, max_concurrency=2))
        samp = Samp.remote(cfg, centralised, env_name, env_cfg, B, seed + 7, str(device), capacity, logdir and f"{logdir}/sampler.log")

        def samp_rejoin(_: int) -> None:
            if "state" in samp_last:
                ray.get(samp.load_state.remote(samp_last["state"]))
            ray.get(samp.set_actors.remote(assemble_policy()))

        def samp_lost(_: int) -> None:
            on_lost(0)

        spool = WorkerPool([samp], ["sampler"], dcfg, samp_rejoin, samp_lost)
    else:
        buf = ReplayBuffer(capacity, M._replay_fields(lay), device)
        gen = make_generator(seed + 7919, device)
        cur = {"obs": env.reset(), "state": env.state(), "fh": {g: None for g in frozen}}

    resumed = run.restore()
    if resumed is None:
        last = pool.call("state")
        if samp is not None:
            ray.get(samp.set_actors.remote(assemble_policy()))
    else:
        if len(resumed["agents"]) != L:
            raise ValueError(f"the checkpoint has {len(resumed['agents'])} agent workers, the env has {L} trained agents")
        last = list(resumed["agents"])
        pool.call("load_state", [(s,) for s in last])
        st.update(resumed["model"])
        if samp is not None:
            samp_last["state"] = resumed["sampler"]
            spool.call("load_state", (resumed["sampler"],))
            ray.get(samp.set_actors.remote(assemble_policy()))
        else:
            env_restore(env, resumed["env"])
            cur = M._to_device(resumed["cur"], device)

    def frozen_targets(d: dict[str, torch.Tensor], a_next: torch.Tensor) -> None:
        Ls, S = d["next_obs"].shape[:2]
        obs_all = {h: d["next_obs"][:, :, lay.offset[h] : lay.offset[h] + hi["n_agents"], : hi["obs_dim"]].reshape(Ls * S, hi["n_agents"], *hi["obs_shape"]) for h, hi in lay.groups.items()}
        for g, fp in frozen.items():
            a, _ = fp.act(obs_all, None, None, generator=gen)
            o, N = lay.offset[g], lay.groups[g]["n_agents"]
            a_next[:, :, o : o + N] = M.critic_action(lay, g, a[g]).reshape(Ls, S, N, -1)

    def assemble_targets(tg: list[torch.Tensor], d_local: dict[str, torch.Tensor] | None, shape: tuple[int, int]) -> torch.Tensor:
        a_next = torch.zeros(*shape, lay.n_agents, lay.act_max)
        for l, t in enumerate(tg):
            a = lay.learner_agent[l]
            a_next[:, :, a, : t.shape[-1]] = t
        if frozen and d_local is not None:
            frozen_targets(d_local, a_next)
        return a_next

    timing = {"update_s": 0.0, "compute_s": 0.0, "updates": 0, "loss_critic": 0.0, "loss_actor": 0.0}

    def get_batch() -> tuple[Any, dict[str, torch.Tensor] | None]:
        if samp is None:
            d = M._learner_batch(buf, lay, cfg.batch_size, gen)
            return ray.put(d), d
        ref = samp.sample.remote(cfg.batch_size)
        return ref, (ray.get(ref) if frozen else None)

    def updates(n: int) -> None:
        t = time.perf_counter()
        b, bl = get_batch()
        tg = pool.call("target", (b,))
        timing["update_s"] += time.perf_counter() - t
        for u in range(n):
            if any(x is None for x in tg):
                return
            t = time.perf_counter()
            an = ray.put(assemble_targets(tg, bl, (L, cfg.batch_size)))
            nb, nbl = get_batch() if u < n - 1 else (None, None)
            res = pool.call("update", (b, an, nb))
            timing["update_s"] += time.perf_counter() - t
            if any(r is None for r in res):
                return
            timing["compute_s"] += max(r[2] for r in res)
            timing["updates"] += 1
            timing["loss_critic"] += sum(r[0]["critic"] for r in res) / L
            timing["loss_actor"] += sum(r[0]["actor"] for r in res) / L
            tg, b, bl = [r[1] for r in res], nb, nbl

    def local_collect(episodes: EpisodeStats) -> None:
        nonlocal cur
        obs = cur["obs"]
        args = [(policy.flat_obs(lay_g(l), obs[lay_g(l)])[:, lay_i(l)].reshape(B, *groups[lay_g(l)]["obs_shape"]),) for l in range(L)]
        res = pool.call("act", args)
        if any(r is None for r in res):
            res = pool.call("act", args)
        acts = {}
        for g in policy.trained:
            s, e = lay.learner_block(g)
            acts[g] = torch.stack(res[s:e], 1)
        fh = dict(cur["fh"])
        for g, fp in frozen.items():
            a, fh[g] = fp.act(obs, cur["state"], fh[g], generator=gen)
            acts[g] = a[g]
        crit = torch.cat([M.critic_action(lay, g, acts[g]) for g in lay.groups], 1)
        out = env.step(acts)
        buf.add({"obs": M.padded_obs(policy, lay, obs), "next_obs": M.padded_obs(policy, lay, out.final_obs), "act": crit,
                 "reward": torch.cat([out.reward[g] for g in lay.groups], 1), "terminated": out.terminated.float(),
                 "sub": torch.zeros(B, lay.n_agents, dtype=torch.int8)})
        for g, fp in frozen.items():
            if fh[g] is not None and hasattr(fp, "reset_hidden"):
                fh[g] = fp.reset_hidden(fh[g], out.done, gen)
        cur = {"obs": out.obs, "state": out.state, "fh": fh}
        episodes.add(out.info, out.done)

    def lay_g(l: int) -> str:
        a = lay.learner_agent[l]
        return next(g for g in lay.groups if lay.offset[g] <= a < lay.offset[g] + lay.groups[g]["n_agents"])

    def lay_i(l: int) -> int:
        return lay.learner_agent[l] - lay.offset[lay_g(l)]

    def credit(n_steps: int, stored: float) -> int:
        st["since_round"] += n_steps
        if st["since_round"] >= cfg.update_every:
            if stored >= max(cfg.warmup_steps, 1):
                st["credit"] += st["since_round"] * cfg.updates_per_step
            st["since_round"] = 0
        k = int(st["credit"])
        st["credit"] -= k
        return k

    try:
        stored = 0.0
        while not run.finished:
            for k in timing:
                timing[k] = 0 if k == "updates" else 0.0
            if samp is None:
                episodes = EpisodeStats(spec, env.device)
                for _ in range(T_iter):
                    local_collect(episodes)
                    k = credit(B, float(len(buf)))
                    if k:
                        updates(k)
                stored = float(len(buf))
                stats = episodes.summary("train")
            else:
                fut = samp.collect.remote(T_iter)
                k = credit(T_iter * B, stored)  # learn while the sampler collects this iteration's steps
                if k:
                    updates(k)
                try:
                    stats = ray.get(fut)
                except ray.exceptions.RayActorError as err:
                    spool.recover(0, err)
                    stats = {"train/episodes": 0.0}
                stored = stats.get("replay_size", stored)
                ray.get(samp.set_actors.remote(assemble_policy()))
            metrics = combine_stats([stats], spec, prefix_workers=False)
            metrics["train/replay_size"] = stored
            if timing["updates"]:
                nu = timing["updates"]
                metrics["loss/critic"], metrics["loss/actor"] = timing["loss_critic"] / nu, timing["loss_actor"] / nu
                metrics["dist/update_s"] = timing["update_s"] / nu
                metrics["dist/comm_share"] = max(0.0, 1.0 - timing["compute_s"] / max(timing["update_s"], 1e-12))
            metrics["dist/restarts"] = float(pool.total_restarts + (spool.total_restarts if samp is not None else 0))
            run.step(T_iter * B, metrics)
            for i, s in enumerate(pool.call("state")):  # the sync point a restarted agent rejoins from
                if s is not None:
                    last[i] = s
            if samp is not None:
                samp_last["state"] = spool.call("state")[0] or samp_last.get("state")
            run.maybe_evaluate(LazyPolicy(lambda: (assemble_policy(), policy)[1]))
            run.maybe_checkpoint(snapshot)
        assemble_policy()
        return policy
    finally:
        pool.kill_all()
        if samp is not None:
            spool.kill_all()
