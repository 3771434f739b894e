"""Model-parallel MADDPG, with or without a sampler worker (Zhou & Chen, ``papers/002`` Sec. IV, methods 2 and 3).

Method 2: "multiple workers that each contain actor and critic networks of a single agent ... the
respective results, i.e. actions determined by the actors, are sent to a server and the server will
send back to each node all actions to boost the centralized critic models." Method 3: "an
additional worker is used to sample transitions from the environment and store them in the replay
buffer. This parallelizes the process of generating transitions alongside the actual training."

``AgentWorker`` (a Ray actor per trained agent ``i``) holds ``mu_i``, ``Q_i`` and their targets
(``maddpg.StackedMLP``, ``maddpg.Policy`` restricted to the agent, so that ``maddpg.explore`` does its
exploration) and Adam optimisers. Its update is ``maddpg.update`` restricted to learner ``i``: the same
``maddpg.td_loss`` and ``maddpg.policy_loss`` on the learner's row of the minibatch (losses are sums over
learners, clipping and Adam are per member, so the maths is the single-process update's on the same
minibatch and target actions; tested).

Beyond the paper: ``distributed.agents_per_worker: m`` gives each worker a contiguous block of ``m``
learners (``worker_blocks``), stacked as in ``maddpg`` (one critic stack, one actor stack per group), so
that the number of processes can match the cores instead of the agents. Everything exchanged is per
block (actions ``(B, m, act_max)``, target actions ``(m, L, S, act_max)``); an uneven last block is
zero-padded for the all-gathers. A checkpoint resumes only with the blocks it was written with.

Two transports (``distributed.transport``), bit-identical results (same RNG draws, same arithmetic; tested):

``allreduce`` (default for ``model``). The server's role is played by a collective: the agent workers form a
``torch.distributed`` gloo group (``maestro.distributed.gloo``) and each holds a *replica* of the batched env,
of the replay buffer and of a generator shared by all (minibatch indices, the frozen groups' actions), all
started from the coordinator's state. Per env step each worker computes its agents' exploratory actions and
one ``all_gather`` gives every worker all actions, so every replica takes the same step and stores the same
transitions. Per update every worker draws the same learner minibatch ``d`` (``maddpg.learner_batch``:
every field ``(L, S, ...)``), computes its agents' target actions ``mu'_j(o'_j)`` on every learner's next
observations ``(m, L, S, act_max)``, and one ``all_gather`` assembles ``a' (L, S, A, act_max)`` (frozen groups
from their policy) on every worker; each then updates its critic and actor. The coordinator calls each
worker once per iteration (``train_chunk``). Fault tolerance: a worker killed mid-iteration breaks the
group; Ray restarts it, it reloads its own state from the last sync point and a live worker's env and
replay replica, a new group forms and training goes on; the interrupted iteration is dropped (its env
steps are not counted, the survivors keep its updates).

``coordinator``. Per update, the coordinator draws the learner minibatch ``d`` (``ray.put`` once, read by
every worker); each worker ``j`` computes its target actions on it; the coordinator assembles ``a'`` and
sends it back; each worker updates its critic and actor. The exchange is pipelined: the call that updates
on minibatch ``u`` also returns the target actions for minibatch ``u + 1`` (after the soft update), so an
update costs one round trip. The coordinator steps the batched env; every env step it sends each worker its
agent's observations ``(B, obs_dim)`` and gathers the exploratory actions (one round trip per env step).

``model_sampler`` (coordinator transport only): a ``SamplerWorker`` (a threaded Ray actor) steps the env with
a copy of the actors and fills its replay buffer while the agents learn; the coordinator fetches minibatches
from it (object refs passed straight to the workers) and pushes the new actors to it after each iteration
(so acting lags learning by at most one iteration).

Not supported here: policy ensembles and policy inference (``ensemble_size > 1``,
``policy_inference``: use ``mode: genetic`` or ``off``). The replay buffer is not checkpointed in
these modes (a resumed run refills it).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
import time
from typing import Any

import torch

from maestro.algos import maddpg as M
from maestro.core.checkpoint import tree_to_device
from maestro.core.episodes import EpisodeStats
from maestro.core.replay import ReplayBuffer
from maestro.core.run import env_restore, env_snapshot
from maestro.core.schedules import off_policy_updates
from maestro.core.seeding import make_generator, seed_everything
from maestro.spec import GroupLayout, group_layout
from maestro.distributed import gloo
from maestro.distributed.common import DistributedConfig, anneal_workers, combine_stats, make_learner, make_worker_env
from maestro.distributed.genetic import LazyPolicy, worker_logging
from maestro.distributed.ray_utils import WorkerPool, actor_options, first_live, require_ray
from maestro.nn.gumbel import gumbel_softmax, one_hot_sample

log = logging.getLogger("maestro")


def update_credit(st: dict[str, Any], n_steps: int, stored: float, cfg: M.Config) -> int:
    """``train_maddpg``'s update schedule (``maestro.core.schedules.off_policy_updates``): after
    ``n_steps`` new transitions (``stored`` in the buffer), the number of updates to run now; ``st``
    (``since_round``, ``credit``) is updated in place."""
    due, st["since_round"], st["credit"] = off_policy_updates(st["since_round"], st["credit"], n_steps, stored, cfg.update_every, cfg.warmup_steps, cfg.updates_per_step)
    return due


def frozen_target_actions(lay: M.AgentLayout, frozen: dict[str, Any], d: dict[str, torch.Tensor], a_next: torch.Tensor, gen: torch.Generator) -> None:
    """Write the frozen groups' actions on the next observations of ``d`` into ``a_next`` ``(L, S, A, act_max)``."""
    Ls, S = d["next_obs"].shape[:2]
    obs_all = {h: d["next_obs"][:, :, lay.offset[h] : lay.offset[h] + hi.n_agents, : hi.obs_dim].reshape(Ls * S, hi.n_agents, *hi.obs_shape) for h, hi in lay.groups.items()}
    for g, fp in frozen.items():
        a, _ = fp.act(obs_all, None, None, generator=gen)
        o, N = lay.offset[g], lay.groups[g].n_agents
        a_next[:, :, o : o + N] = M.critic_action(lay, g, a[g]).reshape(Ls, S, N, -1)


def step_env(env: Any, policy: M.Policy, lay: M.AgentLayout, frozen: dict[str, Any], cur: dict[str, Any], acts: dict[str, torch.Tensor], gen: torch.Generator, buf: ReplayBuffer, episodes: EpisodeStats) -> dict[str, Any]:
    """One vectorised env step with the trained groups' ``acts`` (the frozen groups act here, drawing from
    ``gen``); stores the transitions in ``buf``; returns the new ``cur`` (observations, state, frozen hidden)."""
    obs, acts = cur["obs"], dict(acts)
    fh = dict(cur["fh"])
    for g, fp in frozen.items():
        a, fh[g] = fp.act(obs, cur["state"], fh[g], generator=gen)
        acts[g] = a[g]
    crit = torch.cat([M.critic_action(lay, g, acts[g]) for g in lay.groups], 1)
    out = env.step(acts)
    buf.add({"obs": M.padded_obs(policy, lay, obs), "next_obs": M.padded_obs(policy, lay, out.final_obs), "act": crit,
             "reward": torch.cat([out.reward[g] for g in lay.groups], 1), "terminated": out.terminated.float(),
             "sub": torch.zeros(env.num_envs, lay.n_agents, dtype=torch.int8)})
    for g, fp in frozen.items():
        if fh[g] is not None and hasattr(fp, "reset_hidden"):
            fh[g] = fp.reset_hidden(fh[g], out.done, gen)
    episodes.add(out.info, out.done)
    return {"obs": out.obs, "state": out.state, "fh": fh}


def worker_blocks(n_learners: int, per_worker: int) -> list[tuple[int, int]]:
    """Contiguous learner blocks ``[(start, stop), ...]`` of at most ``per_worker`` learners: one agent worker each."""
    if per_worker < 1:
        raise ValueError(f"distributed.agents_per_worker must be >= 1, got {per_worker}")
    return [(s, min(s + per_worker, n_learners)) for s in range(0, n_learners, per_worker)]


def block_members(lay: M.AgentLayout, start: int, stop: int) -> dict[str, list[int]]:
    """The agents of learners ``[start, stop)`` per group, as indices within the group, in learner order."""
    out: dict[str, list[int]] = {}
    for a in lay.learner_agent[start:stop]:
        g = next(h for h in lay.groups if lay.offset[h] <= a < lay.offset[h] + lay.groups[h].n_agents)
        out.setdefault(g, []).append(a - lay.offset[g])
    return out


def block_obs(policy: M.Policy, groups: dict[str, GroupLayout], members: dict[str, list[int]], obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The observations ``{g: (B, m_g, *obs_shape)}`` of a block's agents (``block_members``) out of the env's."""
    out = {}
    for g, ix in members.items():
        flat = policy.flat_obs(g, obs[g])
        out[g] = flat[:, ix].reshape(flat.shape[0], len(ix), *groups[g].obs_shape)
    return out


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero-pad the first axis of ``x`` to ``rows`` (all-gathers need the same shape on every rank)."""
    return x if x.shape[0] == rows else torch.cat([x, x.new_zeros(rows - x.shape[0], *x.shape[1:])], 0)


class AgentWorker:
    """The actors ``mu_i`` and critics ``Q_i`` of a block of learners (a Ray actor); see the module docstring.

    With ``agents_per_worker: 1`` (the paper's method 2) a block is one agent. A block of ``m`` learners
    holds its critics as one ``StackedMLP`` of ``m`` members and its actors as one stack per group, so its
    update is ``maddpg.update`` restricted to the block's rows of the minibatch.

    Args:
        groups: ``maestro.spec.group_layout`` of the env; trained: the trained groups.
        blocks: every worker's learner block ``(start, stop)`` (``worker_blocks``); w: this worker's index
            in ``blocks`` (and its rank in the gloo group).
    """

    def __init__(self, cfg: M.Config, centralised: bool, groups: dict[str, GroupLayout], trained: list[str], blocks: list[tuple[int, int]], w: int, seed: int, log_path: str | None = None, replica: dict[str, Any] | None = None) -> None:
        torch.set_num_threads(1)
        worker_logging(log_path)
        seed_everything(seed)
        self.cfg, self.centralised = cfg, centralised
        self.lay = M.make_layout(groups, trained, 1)
        lay = self.lay
        self.blocks, (self.s, self.e) = [tuple(b) for b in blocks], tuple(blocks[w])
        self.m_max = max(e - s for s, e in self.blocks)
        self.members = block_members(lay, self.s, self.e)
        self.infos = {g: dataclasses.replace(groups[g], n_agents=len(ix)) for g, ix in self.members.items()}
        self.rows, self.agents, r = {}, {}, 0  # per group: the block's rows (its learners) and their agents' indices
        for g, ix in self.members.items():
            self.rows[g], r = slice(r, r + len(ix)), r + len(ix)
            self.agents[g] = torch.tensor([lay.offset[g] + i for i in ix])
        arch = {"hidden": list(cfg.hidden), "ensemble_size": 1, "continuous_head": cfg.continuous_head}
        self.policy = M.Policy(self.infos, arch)
        self.lay1 = M.make_layout(self.infos, list(self.infos), 1)
        in_dim = lay.n_agents * (lay.obs_max + lay.act_max) if centralised else lay.obs_max + lay.act_max
        self.critic = M.StackedMLP(self.e - self.s, in_dim, tuple(cfg.hidden), 1)
        self.target_critic = copy.deepcopy(self.critic)
        self.target_actor = copy.deepcopy(self.policy.actors)
        for p in list(self.target_critic.parameters()) + list(self.target_actor.parameters()):
            p.requires_grad_(False)
        self.opts = {
            "actor": torch.optim.Adam(self.policy.actors.parameters(), lr=cfg.actor_lr, foreach=True),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, foreach=True),
        }
        self.generator = make_generator(seed + 7919, "cpu")
        self.la = torch.tensor(lay.learner_agent[self.s : self.e])  # the block's agents: ``td_loss`` / ``policy_loss`` indices
        self.ar = torch.arange(self.e - self.s)
        self.world = 0  # size of the gloo group this worker is in (0: none)
        if replica is not None:  # transport "allreduce": this worker's replica of the env and the replay buffer
            r = replica
            self.frozen = r["frozen"]
            self.env = make_worker_env(r["env_name"], r["env_cfg"], r["num_envs"], 0, r["device"])  # its state comes from load_replica
            self.full = M.Policy(groups, arch, self.frozen)  # the observation helpers (flat_obs, padded_obs); its actors are not used
            self.buf = ReplayBuffer(r["capacity"], M.replay_fields(self.lay), r["device"])
            self.shared_gen = make_generator(0, r["device"])  # minibatches and frozen actions: the same draws on every worker
            self.cur: dict[str, Any] = {}

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Exploratory env actions ``{g: (B, m_g, ...)}`` of the block's agents for their observations
        ``{g: (B, m_g, *obs_shape)}`` (``maddpg.explore``)."""
        B = next(iter(obs.values())).shape[0]
        hidden = {"sub": {g: torch.zeros(B, len(ix), dtype=torch.long) for g, ix in self.members.items()}, "frozen": {}}
        acts, _, _ = M.explore(self.policy, self.lay1, self.cfg, obs, None, hidden, self.generator)
        return acts

    @torch.no_grad()
    def target(self, d: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
        """``mu'_i(o'_i)`` of the block's agents on every learner's next observations: ``(m, L, S, act_max)``."""
        if d is None:
            return None
        L, S = d["next_obs"].shape[:2]
        out = []
        for g, ix in self.members.items():
            info, m = self.infos[g], len(ix)
            x = d["next_obs"][:, :, self.agents[g], : info.obs_dim]  # (L, S, m_g, D)
            z = self.target_actor[g](x.permute(2, 0, 1, 3).reshape(m, L * S, -1)).reshape(m, L, S, -1)
            a = one_hot_sample(z, self.generator) if info.discrete else self.policy.box(g, z)
            out.append(M.pad_last(a, self.lay.act_max))
        return torch.cat(out, 0)

    def update(self, d: dict[str, torch.Tensor], a_next: torch.Tensor, next_d: dict[str, torch.Tensor] | None) -> tuple[dict[str, float], torch.Tensor | None, float]:
        """One gradient step of the block's critics and actors on its rows of the minibatch ``d`` with target
        actions ``a_next`` ``(L, S, A, act_max)`` (``maddpg.update`` for these learners), the soft updates, then
        the target actions for ``next_d``. Returns (losses summed over the block, next target actions, compute seconds)."""
        t0 = time.perf_counter()
        losses = self._learn(d, a_next)
        nt = self.target(next_d)
        return losses, nt, time.perf_counter() - t0

    def _learn(self, d: dict[str, torch.Tensor], a_next: torch.Tensor) -> dict[str, float]:
        """The critic step, the actor step (with the updated critic) and the soft target updates."""
        cfg, s, e = self.cfg, self.s, self.e
        d1 = {k: d[k][s:e] for k in ("obs", "act", "next_obs", "reward", "terminated")}  # the block's rows (m, S, ...)
        closs, q = M.td_loss(self.critic, self.target_critic, d1, a_next[s:e], self.la, self.ar, self.centralised, cfg.gamma)
        self.opts["critic"].zero_grad(set_to_none=True)
        closs.backward()
        if cfg.max_grad_norm > 0:
            M.clip_grad_norm_per_member(list(self.critic.parameters()), cfg.max_grad_norm)
        self.opts["critic"].step()
        own_a, reg = [], torch.zeros(())
        for g, rows in self.rows.items():
            info = self.infos[g]
            z = self.policy.actors[g](d1["obs"][self.ar[rows], :, self.la[rows], : info.obs_dim])  # (m_g, S, D)
            reg = reg + z.pow(2).mean((1, 2)).sum()
            a = gumbel_softmax(z, cfg.gumbel_temperature, hard=True, generator=self.generator) if info.discrete else self.policy.box(g, z)
            own_a.append(M.pad_last(a, self.lay.act_max))
        aloss = M.policy_loss(self.critic, d1, torch.cat(own_a, 0), reg, self.la, self.ar, self.centralised, cfg.actor_reg)
        self.opts["actor"].zero_grad(set_to_none=True)
        aloss.backward()
        if cfg.max_grad_norm > 0:
            for g in self.members:
                M.clip_grad_norm_per_member(list(self.policy.actors[g].parameters()), cfg.max_grad_norm)
        self.opts["actor"].step()
        M.soft_update(self.target_critic, self.critic, cfg.tau)
        M.soft_update(self.target_actor, self.policy.actors, cfg.tau)
        return {"critic": float(closs.detach()), "actor": float(aloss.detach()), "q": float(q.detach().mean())}

    # ------------------------------------------------------------ transport "allreduce" (``gloo``)
    rendezvous = gloo.member_rendezvous
    join_group = gloo.member_join
    leave_group = gloo.member_leave

    def replica_state(self, replay: bool) -> dict[str, Any]:
        """The replicated part (env, current observations, shared generator; the replay buffer if ``replay``)."""
        s = {"env": env_snapshot(self.env), "cur": self.cur, "shared_gen": self.shared_gen.get_state()}
        if replay:
            s["replay"] = self.buf.state_dict()
        return s

    def load_replica(self, s: dict[str, Any]) -> None:
        env_restore(self.env, s["env"])
        self.cur = s["cur"]
        self.shared_gen.set_state(s["shared_gen"])
        if "replay" in s:
            self.buf.load_state_dict(s["replay"])

    def train_chunk(self, n: int, st: dict[str, Any]) -> dict[str, Any]:
        """``n`` vectorised env steps of the replicated env, each followed by the updates its credit allows,
        in lockstep with the group: per env step one all-gather of the agents' exploratory actions, per
        update one all-gather of their target actions. Returns ``stats`` (the episodes of the chunk), the
        new schedule ``st``, ``sched`` (``updates``, summed ``critic`` / ``actor`` losses, ``update_s`` wall
        time of the updates, ``comm_s`` of it in all-gathers) and ``replica`` (``replica_state(False)``);
        or ``failed`` if the group broke (a peer died or timed out)."""
        st = dict(st)
        sched = {"updates": 0, "critic": 0.0, "actor": 0.0, "update_s": 0.0, "comm_s": 0.0}
        episodes = EpisodeStats(self.env.spec, self.env.device)
        B = self.env.num_envs
        try:
            if self.world < 1:
                raise gloo.GroupBroken("this agent worker is in no gloo group (restarted?)")
            for _ in range(n):
                self._collect_step(episodes)
                for _ in range(update_credit(st, B, float(len(self.buf)), self.cfg)):
                    t0 = time.perf_counter()
                    losses, comm = self._update_allreduce()
                    sched["update_s"] += time.perf_counter() - t0
                    sched["comm_s"] += comm
                    sched["updates"] += 1
                    sched["critic"] += losses["critic"]
                    sched["actor"] += losses["actor"]
        except gloo.GroupBroken as err:
            return {"failed": str(err)}
        return {"stats": episodes.summary("train"), "st": st, "sched": sched, "stored": float(len(self.buf)), "replica": self.replica_state(False)}

    def gather_blocks(self, x: torch.Tensor, axis: int) -> tuple[torch.Tensor, float]:
        """All-gather every worker's ``x`` (its block's rows on ``axis``, padded to the largest block) and
        concatenate the blocks in learner order; returns (the result, seconds in the all-gather)."""
        parts, comm = gloo.all_gather(pad_rows(x.movedim(axis, 0), self.m_max))
        return torch.cat([p[: e - s] for p, (s, e) in zip(parts, self.blocks)], 0).movedim(0, axis), comm

    def _collect_step(self, episodes: EpisodeStats) -> None:
        lay, B = self.lay, self.env.num_envs
        obs = self.cur["obs"]
        own = self.act(block_obs(self.full, lay.groups, self.members, obs))
        x = torch.cat([M.pad_last(own[g].float().reshape(B, len(ix), -1), lay.act_max) for g, ix in self.members.items()], 1)
        every, _ = self.gather_blocks(x, 1)  # (B, L, act_max)
        acts = {}
        for g in self.full.trained:
            s, e = lay.learner_block(g)
            y = every[:, s:e]
            acts[g] = y[..., 0].long() if lay.groups[g].discrete else y[..., : lay.groups[g].action_dim]
        self.cur = step_env(self.env, self.full, lay, self.frozen, self.cur, acts, self.shared_gen, self.buf, episodes)

    def _update_allreduce(self) -> tuple[dict[str, float], float]:
        lay = self.lay
        d = M.learner_batch(self.buf, lay, self.cfg.batch_size, self.shared_gen)
        tg, comm = self.gather_blocks(self.target(d), 0)  # (L, L, S, act_max): learner j's target actions on every batch
        a_next = torch.zeros(*d["next_obs"].shape[:2], lay.n_agents, lay.act_max, device=d["next_obs"].device)
        a_next[:, :, list(lay.learner_agent)] = tg.permute(1, 2, 0, 3)  # one scatter, no loop over agents
        if self.frozen:
            frozen_target_actions(lay, self.frozen, d, a_next, self.shared_gen)
        return self._learn(d, a_next), comm

    def anneal(self, progress: float) -> dict[str, float]:
        """``maddpg.anneal_optimisers`` on the block's optimisers."""
        return M.anneal_optimisers(self.cfg, self.opts, progress)

    def actor_state(self) -> dict[str, torch.Tensor]:
        """The block's actors, ``{"<group>.<param>": (m_g, ...)}`` (keys of ``Policy.actors``)."""
        return {k: v.clone() for k, v in self.policy.actors.state_dict().items()}

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
            return M.learner_batch(self.learner.buf, self.learner.lay, S, self.sample_gen)

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
    blocks = worker_blocks(L, dcfg.agents_per_worker)
    W = len(blocks)
    members = [block_members(lay, s, e) for s, e in blocks]
    T_iter = cfg.iteration_steps or spec.max_steps
    capacity = min(cfg.buffer_size, run.cfg.env_steps + T_iter * B)
    logdir = None if run.dir is None else str(run.dir / "workers")
    allreduce = dcfg.transport == "allreduce" and not sampler
    replica = {"env_name": env_name, "env_cfg": env_cfg, "num_envs": B, "device": str(device), "capacity": capacity, "frozen": frozen} if allreduce else None
    Agent = ray.remote(AgentWorker).options(**actor_options(dcfg))
    names = [f"agent{s}" if e - s == 1 else f"agents{s}-{e - 1}" for s, e in blocks]
    handles = [Agent.remote(cfg, centralised, groups, policy.trained, blocks, w, seed + 1000 * blocks[w][0], logdir and f"{logdir}/{names[w]}.log", replica) for w in range(W)]
    last: list[Any] = [None] * W
    st: dict[str, Any] = {"credit": 0.0, "since_round": 0}
    rep: dict[str, Any] = {}  # allreduce: the replicated env state at the last iteration's end (worker 0's)
    group = {"restarts": 0, "failures": 0}
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
            snap.update(env_part())
        return snap

    def env_part() -> dict[str, Any]:
        """The env's state and current observations (allreduce: the workers' replicas, plus their shared generator)."""
        return dict(rep) if allreduce else {"env": env_snapshot(env), "cur": cur}

    def on_lost(i: int) -> None:
        snap = {"policy": policy.policy_state(), "agents": list(last), "model": dict(st)}
        if samp is not None:
            snap["sampler"] = samp_last.get("state")
        else:
            snap.update(env_part())
        run.checkpoint(snap)

    def rejoin(i: int) -> None:
        """A restarted agent takes its state at the last sync point; with allreduce also a live worker's
        replica of the env and the replay buffer (or, without one, the last replica state and an empty buffer)."""
        ray.get(handles[i].load_state.remote(last[i]))
        if allreduce:
            j = first_live(handles, i)
            ray.get(handles[i].load_replica.remote(ray.get(handles[j].replica_state.remote(True)) if j is not None else rep))

    pool = WorkerPool(handles, names, dcfg, rejoin, on_lost)

    def form_group() -> None:
        gloo.form_group(pool, W, dcfg.collective_timeout_s, dcfg.max_restarts * W + 2, "model-parallel")
        group["restarts"] = pool.total_restarts

    def assemble_policy() -> dict[str, torch.Tensor]:
        parts = pool.call("actor_state")  # {"<group>.<param>": (m_g, ...)} per worker, blocks in learner order
        full = {k: torch.cat([p[k] for p in parts if k in p], 0) for k in policy.actors.state_dict()}
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
        buf = None if allreduce else ReplayBuffer(capacity, M.replay_fields(lay), device)  # allreduce: the workers hold it
        gen = make_generator(seed + 7919, device)
        cur = {"obs": env.reset(), "state": env.state(), "fh": {g: None for g in frozen}}

    resumed = run.restore()
    if resumed is None:
        last = pool.call("state")
        if samp is not None:
            ray.get(samp.set_actors.remote(assemble_policy()))
        if allreduce:
            rep.update(env=env_snapshot(env), cur=cur, shared_gen=gen.get_state())
    else:
        if len(resumed["agents"]) != W:
            raise ValueError(f"the checkpoint has {len(resumed['agents'])} agent workers, this run has {W} ({L} trained agents, distributed.agents_per_worker={dcfg.agents_per_worker})")
        last = list(resumed["agents"])
        pool.call("load_state", [(s,) for s in last])
        st.update(resumed["model"])
        if samp is not None:
            samp_last["state"] = resumed["sampler"]
            spool.call("load_state", (resumed["sampler"],))
            ray.get(samp.set_actors.remote(assemble_policy()))
        else:
            env_restore(env, resumed["env"])
            cur = tree_to_device(resumed["cur"], device)
            if allreduce:
                rep.update(env=resumed["env"], cur=cur, shared_gen=resumed.get("shared_gen", gen.get_state()))
    if allreduce:
        pool.call("load_replica", (rep,))
        form_group()

    def assemble_targets(tg: list[torch.Tensor], d_local: dict[str, torch.Tensor] | None, shape: tuple[int, int]) -> torch.Tensor:
        a_next = torch.zeros(*shape, lay.n_agents, lay.act_max)
        a_next[:, :, list(lay.learner_agent)] = torch.cat(tg, 0).permute(1, 2, 0, 3)  # blocks (m, L, S, act_max) in learner order
        if frozen and d_local is not None:
            frozen_target_actions(lay, frozen, d_local, a_next, gen)
        return a_next

    timing = {"update_s": 0.0, "compute_s": 0.0, "updates": 0, "loss_critic": 0.0, "loss_actor": 0.0}

    def get_batch() -> tuple[Any, dict[str, torch.Tensor] | None]:
        if samp is None:
            d = M.learner_batch(buf, lay, cfg.batch_size, gen)
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
        args = [(block_obs(policy, groups, mb, obs),) for mb in members]
        res = pool.call("act", args)
        if any(r is None for r in res):
            res = pool.call("act", args)
        acts = {g: torch.cat([r[g] for r in res if g in r], 1) for g in policy.trained}
        cur = step_env(env, policy, lay, frozen, cur, acts, gen, buf, episodes)

    def iteration_allreduce() -> tuple[dict[str, float], float] | None:
        """One call per iteration: the workers step their env replicas and update in lockstep (gloo)."""
        if pool.total_restarts != group["restarts"]:  # an agent restarted outside a chunk (checkpoint, eval)
            form_group()
        res = pool.call("train_chunk", (T_iter, dict(st)))
        if any(r is None or "failed" in r for r in res):
            why = next((r["failed"] for r in res if r is not None and "failed" in r), "an agent worker died during the chunk")
            group["failures"] += 1
            if group["failures"] > dcfg.max_restarts * W + 2:
                raise RuntimeError(f"the model-parallel gloo group keeps breaking ({why})")
            log.warning("the model-parallel gloo group broke (%s); forming a new group (the interrupted iteration is dropped)", why)
            form_group()
            return None
        group["failures"] = 0
        if len({(r["st"]["credit"], r["st"]["since_round"], r["sched"]["updates"]) for r in res}) != 1:
            raise RuntimeError(f"model-parallel agents left lockstep: {[(r['st'], r['sched']['updates']) for r in res]}")
        st.update(res[0]["st"])
        rep.clear()
        rep.update(res[0]["replica"])
        sched = [r["sched"] for r in res]
        timing["updates"] = int(sched[0]["updates"])
        timing["update_s"] = max(x["update_s"] for x in sched)
        timing["compute_s"] = max(x["update_s"] - x["comm_s"] for x in sched)
        timing["loss_critic"] = sum(x["critic"] for x in sched) / L
        timing["loss_actor"] = sum(x["actor"] for x in sched) / L
        return res[0]["stats"], res[0]["stored"]

    stored = 0.0
    while not run.finished:
        for k in timing:
            timing[k] = 0 if k == "updates" else 0.0
        lrs = anneal_workers(pool, cfg, run)
        if allreduce:
            got = iteration_allreduce()
            if got is None:
                continue  # the group broke: the iteration is dropped (its env steps are not counted)
            stats, stored = got
        elif samp is None:
            episodes = EpisodeStats(spec, env.device)
            for _ in range(T_iter):
                local_collect(episodes)
                k = update_credit(st, B, float(len(buf)), cfg)
                if k:
                    updates(k)
            stored = float(len(buf))
            stats = episodes.summary("train")
        else:
            fut = samp.collect.remote(T_iter)
            k = update_credit(st, T_iter * B, stored, cfg)  # learn while the sampler collects this iteration's steps
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
        metrics.update(lrs)
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
