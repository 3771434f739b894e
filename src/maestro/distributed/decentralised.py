"""MATRPO with every agent in its own process (``distributed.mode: decentralised``; issue 21 item 5).

Li & He 2020 (arXiv 2010.07916, Sec. IV-D): "the agents only share a likelihood ratio with their
neighbors", never their observations, rewards, policies or value functions. Here each agent is a Ray
actor (``MatrpoAgent``) that holds, privately, its policy (a ``consensus`` ``JointPolicy`` with its own
row only), its value net and optimiser, its minibatch generator, the observations and rewards the
env gives it, its advantages, and its copies of the ADMM state of its own edges (``z_e``,
``lambda_e``). The driver plays the environment and the network:

1. **acting**: every env step the driver sends agent ``i`` its observation ``(B, D)`` and the uniform
   draws ``(B, A)`` of its Gumbel-max sample (common random numbers from the run's action generator,
   so that the run is the in-process one bit for bit); the agent answers its own action ``(B,)``;
2. **after the rollout** agent ``i`` gets its own reached observations and rewards ``(T, B, ...)``, the
   episode ends ``(T, B)`` and the executed joint actions ``(T, B, N)`` (public in the paper), fits
   its value net and forms its advantages (``prepare``), standardises them and forms its local
   linearisation (``linearise``). With ``advantage_norm: agent`` it uses its own statistics and
   nothing crosses; with ``pooled`` (the authors' statistics) each agent sends three numbers, the
   count, sum and sum of squares of its advantages, and gets back the pooled mean and std (two
   numbers): aggregates, never the advantages, rewards or observations themselves. (A driver adds
   them here; a ring could agree on them by average consensus instead, as on the log-ratios.)
3. **ADMM** (``maestro.algos.matrpo``): per step of disjoint rounds (``consensus.group_rounds``) the
   driver asks the endpoints for their local steps (``local_step``: no argument, the agent computes
   its proximal target from its own edge copies) and routes each answer, the log-ratios ``x_q``
   ``(M, N)``, to the neighbour on the edge (``exchange``), which applies ``consensus.edge_update``.
   Nothing else crosses during the rounds (``Courier.log`` records every call; tested);
4. ``finish``: each agent keeps its last local step's parameters and writes its own snapshot to its
   own file (``<run>/agents/agent<i>.pt``).

The arithmetic is the in-process ``matrpo`` run's, row by row (the same seeds, ``node_target`` /
``node_targets`` and ``edge_update``, the batched trust-region step on one row), so the same seed gives
the same parameters (tested). What an agent computes costs the same as its row of the in-process
run; the agents of a matching run in parallel processes.

**Faults.** An agent whose process dies is restarted by Ray (``distributed.max_restarts``); its
constructor reloads its own snapshot of the last completed iteration, the live agents roll back to
theirs, the driver restores the env and its generators to the start of the iteration, and the
iteration is run again: the run continues exactly as if nothing had happened.

**Checkpoints and the returned policy** gather the agents' parameters at the driver (as deploying
the trained team would); a resumed run sends each agent its own state back. Evaluation during
training pulls the parameters only when it runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maestro.algos import matrpo
from maestro.core.checkpoint import save_atomic, tree_to_device
from maestro.core.consensus import consensus_residual, edge_schedule, edge_update, graph_from_edges, group_rounds, node_target
from maestro.core.joint_policy import AgentAxis, HeadsOnBatch, JointPolicy
from maestro.core.run import env_restore, env_snapshot
from maestro.core.seeding import derived_seed, make_generator
from maestro.core.trpo_family import (
    AgentBatch,
    AgentValues,
    advantage_moments,
    agent_major,
    collect,
    normalise_rows,
    normalise_with,
    pooled_statistics,
    private_advantages,
)
from maestro.distributed.config import DistributedConfig
from maestro.distributed.genetic import LazyPolicy
from maestro.distributed.ray_utils import WorkerPool, actor_options, require_ray
from maestro.nn.heads import gumbel_argmax

log = logging.getLogger("maestro")


class MatrpoAgent:
    """One agent's private learner (a Ray actor): see the module docstring.

    Args:
        agent: its index ``i`` on the agent axis.
        cfg: MATRPO's settings.
        axis: the agent axis (``AgentAxis.to_dict``).
        edges: the communication graph's edge list (public).
        seed: the run's seed (the agent's generators derive from it and ``i``).
        steps, copies: ``T`` and ``B`` of an iteration.
        store: the folder of the agents' snapshot files.
    """

    def __init__(self, agent: int, cfg: matrpo.Config, axis: dict[str, Any], edges: list[list[int]], seed: int, steps: int, copies: int, store: str) -> None:
        torch.set_num_threads(1)
        self.i, self.cfg = agent, cfg
        self.axis = AgentAxis.from_dict(axis)
        self.graph = graph_from_edges(self.axis.n_agents, edges)
        self.signs = self.graph._sign[agent]
        self.edges = [e for e, _ in self.graph.incident(agent)]
        self.policy = JointPolicy("consensus", self.axis, cfg.hidden, cfg.activation, seed=seed, agents=[agent])
        self.values = AgentValues([agent], self.axis.obs_dim, seed, cfg.hidden, cfg.activation, cfg.vf_lr)
        self.obs = torch.zeros(steps, copies, self.axis.obs_dim)
        self.store = Path(store)
        self.snapshots: dict[int, dict[str, Any]] = {}
        for path in sorted(self.store.glob(f"agent{agent}-*.pt")):  # a restarted process: its own last snapshots
            self.snapshots[int(path.stem.split("-")[1])] = torch.load(path, weights_only=True)
        if self.snapshots:
            self._load(self.snapshots[max(self.snapshots)])
        else:
            self._save(0)

    # ---------------------------------------------------------------- plumbing
    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def state(self) -> dict[str, Any]:
        """The agent's learning state (for the driver's checkpoints)."""
        return {"theta": self.policy.theta.detach().clone(), "values": self.values.state_dict()}

    def _load(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.policy.theta.copy_(state["theta"])
        self.values.load_state_dict(state["values"])

    def _save(self, iteration: int) -> None:
        """Snapshot after ``iteration`` completed iterations, in memory and in the agent's own file; the
        two newest are kept (an iteration that fails while the agents commit rolls back one more)."""
        self.snapshots[iteration] = self.state()
        save_atomic(self.snapshots[iteration], self.store / f"agent{self.i}-{iteration}.pt")
        for old in [k for k in self.snapshots if k < iteration - 1]:
            del self.snapshots[old]
            (self.store / f"agent{self.i}-{old}.pt").unlink(missing_ok=True)

    def load_state(self, state: dict[str, Any], iteration: int) -> bool:
        """Take ``state`` (a resumed run's) as the state after ``iteration`` iterations."""
        self._load(state)
        self._save(iteration)
        return True

    def rollback(self, iteration: int) -> bool:
        """Back to the state after ``iteration`` iterations (an agent died during the next one)."""
        self._load(self.snapshots[iteration])
        return True

    # ---------------------------------------------------------------- one iteration
    def act(self, t: int, obs: Tensor, uniform: Tensor) -> Tensor:
        """Own action ``(B,)`` at step ``t`` from own observation ``(B, D)`` and the sample's uniform draws ``(B, A)``."""
        self.obs[t].copy_(obs)
        with torch.no_grad():
            logits = self.policy.logits(self.policy.theta, obs.unsqueeze(0))[0, :, self.i]
        return gumbel_argmax(logits, uniform)

    def prepare(self, final_obs: Tensor, reward: Tensor, terminated: Tensor, done: Tensor, actions: Tensor) -> dict[str, Any]:
        """Value fit and advantages on the agent's own data; with ``advantage_norm: pooled`` the
        answer carries the advantages' ``advantage_moments`` (count, sum, sum of squares)."""
        cfg = self.cfg
        own = AgentBatch(self.obs.unsqueeze(2), final_obs.unsqueeze(2), actions, reward.unsqueeze(-1), terminated, done)
        advantages, value_loss = private_advantages(self.values, own, cfg.gamma, cfg.gae_lambda, cfg.vf_epochs, cfg.vf_minibatch)
        self.advantages, self.actions = agent_major(advantages), actions
        out: dict[str, Any] = {"value_loss": float(value_loss[0])}
        if cfg.advantage_norm == "pooled":
            out["moments"] = advantage_moments(self.advantages)
        return out

    def linearise(self, mean: float | None = None, std: float | None = None) -> bool:
        """Standardise the advantages (own statistics, or the pooled ``mean`` and ``std`` the driver
        sends), build the local steps' linearisation and reset the agent's edge copies."""
        T, B, N = self.actions.shape
        M = T * B
        x = normalise_rows(self.advantages) if mean is None else normalise_with(self.advantages, mean, std)
        heads = HeadsOnBatch(self.policy, self.obs.reshape(1, M, -1), self.actions.reshape(1, M, N), self.cfg.fisher_every)
        self.local = matrpo.make_local_steps(self.cfg, heads, x)
        self.z = torch.zeros(len(self.edges), M, N)
        self.multipliers = torch.zeros(len(self.edges), M, N)
        self.x = torch.zeros(M, N)
        del self.advantages, self.actions
        return True

    def local_step(self) -> Tensor:
        """One local step toward the target of the agent's own edge copies; returns the new log-ratios ``(M, N)``."""
        rho = self.cfg.rho
        target = node_target(self.z, self.multipliers, self.signs, rho)
        penalty = torch.tensor([rho * len(self.edges)], dtype=target.dtype)
        self.x = self.local.step([0], target.unsqueeze(0), penalty)[0]
        return self.x

    def exchange(self, edge: int, x_neighbour: Tensor) -> bool:
        """The neighbour's log-ratios on ``edge``: update the agent's copy of the edge (``edge_update``)."""
        k = self.edges.index(edge)
        first = self.signs[k] > 0
        x_first, x_second = (self.x, x_neighbour) if first else (x_neighbour, self.x)
        self.z[k], self.multipliers[k] = edge_update(x_first, x_second, self.multipliers[k], self.cfg.rho)
        return True

    def finish(self, iteration: int) -> dict[str, float]:
        """Keep the last local step's parameters and snapshot them as the state after ``iteration``
        iterations; the iteration's statistics."""
        local = self.local
        with torch.no_grad():
            theta = local.final_theta()
            self.policy.theta.copy_(theta)
            x, kl = local.heads.log_ratios_and_kl(theta, torch.zeros(1, dtype=torch.long))
            gain = matrpo.believed_gains(local.advantages, x)
        self._save(iteration)
        del self.local
        return {"kl": float(kl[0]), "surrogate_gain": float(gain[0]), "local_kl_max": local.kl_max, "local_kl_sum": local.kl_sum, "local_steps": local.steps, "local_accepted": local.accepted}


class IterationLost(RuntimeError):
    """An agent died during an iteration (it has been restarted): the iteration is run again."""


class Courier:
    """The driver's calls to the agents, each recorded in ``log`` (method, agent, what was sent, what came back).

    ``log`` entries are ``(method, agent, args, result)`` with tensors summarised as ``("tensor", shape)``,
    for the current iteration (cleared at its start); tests read it to show what crosses a process
    boundary. ``keep`` holds the tensors that crossed too (tests compare them; off by default).
    """

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.log: list[tuple[str, int, tuple, Any]] = []
        self.keep = False
        self.kept: list[tuple[str, int, tuple, Any]] = []

    def call(self, method: str, args: dict[int, tuple]) -> dict[int, Any]:
        """``method(*args[i])`` on every agent ``i`` in ``args`` at once; ``IterationLost`` if one died."""
        agents = sorted(args)
        per = [args.get(i, ()) for i in range(len(self.pool))]
        out = self.pool.call(method, per, only=agents)
        if any(r is None for r in out):
            raise IterationLost(f"an agent died during {method!r}")
        result = dict(zip(agents, out))
        self.log += [(method, i, tuple(_summary(a) for a in args[i]), _summary(result[i])) for i in agents]
        if self.keep:
            self.kept += [(method, i, args[i], result[i]) for i in agents]
        return result


def _summary(x: Any) -> Any:
    if isinstance(x, Tensor):
        return ("tensor", tuple(x.shape))
    if isinstance(x, dict):
        return {k: _summary(v) for k, v in x.items()}
    return x


COURIERS: list[Courier] = []
"""The couriers of the runs of this process, newest last (tests read their logs)."""


def train_decentralised(dcfg: DistributedConfig, cfg: matrpo.Config, env: Any, run: Any, seed: int) -> JointPolicy:
    """MATRPO with one Ray actor per agent (module docstring); returns the assembled team policy."""
    ray = require_ray()
    axis = AgentAxis.of(env.spec)
    N, A = axis.n_agents, axis.num_actions
    graph = matrpo.comm_graph(cfg, N)
    T, B = cfg.rollout_steps, env.num_envs
    if str(env.device) != "cpu":
        raise ValueError(f"distributed.mode=decentralised runs on CPU; run.device is {env.device}")
    own_store = run.dir is None
    store = Path(tempfile.mkdtemp(prefix="maestro-agents-")) if own_store else Path(run.dir) / "agents"
    store.mkdir(parents=True, exist_ok=True)
    Agent = ray.remote(MatrpoAgent).options(**actor_options(dcfg))
    handles = [Agent.remote(i, cfg, axis.to_dict(), graph.edges.tolist(), seed, T, B, str(store)) for i in range(N)]
    pool = WorkerPool(handles, [f"agent {i}" for i in range(N)], dcfg)
    courier = Courier(pool)
    COURIERS.append(courier)
    generator = make_generator(derived_seed(seed, "actions"))  # as the in-process trainer's (TrpoAgents)
    order_generator = make_generator(derived_seed(seed, "edge-order"))
    batch = AgentBatch.allocate(T, B, axis, "cpu")
    everyone = range(N)

    def gather() -> tuple[dict[int, Any], JointPolicy]:
        states = courier.call("state", {i: () for i in everyone})
        policy = JointPolicy("consensus", axis, cfg.hidden, cfg.activation, seed=seed)
        with torch.no_grad():
            policy.theta.copy_(torch.cat([states[i]["theta"] for i in everyone]))
        return states, policy

    resumed = run.restore()
    if resumed is None:
        obs = axis.stack_obs(env.reset())
    else:
        courier.call("load_state", {i: (resumed["agents"][i], run.iteration) for i in everyone})
        generator.set_state(resumed["generator"])
        order_generator.set_state(resumed["edge_order"])
        env_restore(env, resumed["env"])
        obs = tree_to_device(resumed["obs"], "cpu")

    def snapshot() -> dict[str, Any]:
        states, policy = gather()
        return {"policy": policy.policy_state(), "agents": [states[i] for i in everyone], "generator": generator.get_state(),
                "edge_order": order_generator.get_state(), "env": env_snapshot(env), "obs": obs}

    def iteration(obs: Tensor) -> tuple[Tensor, dict[str, float]]:
        clock = {"t": 0}

        def act(stacked: Tensor) -> Tensor:
            uniform = torch.rand((B, N, A), generator=generator)
            t = clock["t"]
            clock["t"] += 1
            out = courier.call("act", {i: (t, stacked[:, i], uniform[:, i]) for i in everyone})
            return torch.stack([out[i] for i in everyone], -1)

        t0 = time.perf_counter()
        obs, stats = collect(env, axis, act, batch, obs)
        prepared = courier.call("prepare", {i: (batch.final_obs[:, :, i], batch.reward[:, :, i], batch.terminated, batch.done, batch.actions) for i in everyone})
        stats_msg = pooled_statistics([prepared[i]["moments"] for i in everyone]) if cfg.advantage_norm == "pooled" else ()
        courier.call("linearise", {i: stats_msg for i in everyone})
        t1 = time.perf_counter()
        steps = group_rounds(graph, edge_schedule(graph, cfg.admm_rounds, cfg.edge_order, order_generator))
        latest = torch.zeros(N, T * B, N)  # every agent's last log-ratios, as the driver routed them
        for edges in steps:
            pairs = [tuple(graph.edges[e].tolist()) for e in edges.tolist()]
            xs = courier.call("local_step", {q: () for pair in pairs for q in pair})
            routed: dict[int, tuple] = {}
            for e, (i, j) in zip(edges.tolist(), pairs):
                routed[i], routed[j] = (e, xs[j]), (e, xs[i])
                latest[i], latest[j] = xs[i], xs[j]
            courier.call("exchange", routed)
        done = courier.call("finish", {i: (run.iteration + 1,) for i in everyone})
        steps_total = max(sum(done[i]["local_steps"] for i in everyone), 1)
        metrics = {
            **stats,
            "loss/kl": sum(done[i]["kl"] for i in everyone) / N,
            "loss/kl_max": max(done[i]["kl"] for i in everyone),
            "loss/surrogate_gain": sum(done[i]["surrogate_gain"] for i in everyone) / N,
            "loss/local_kl_max": max(done[i]["local_kl_max"] for i in everyone),
            "loss/local_kl": sum(done[i]["local_kl_sum"] for i in everyone) / steps_total,
            "loss/local_step_accepted": sum(done[i]["local_accepted"] for i in everyone) / steps_total,
            "loss/admm_steps": float(len(steps)),
            "loss/consensus_residual": float(consensus_residual(latest, graph)),
            "loss/value": sum(prepared[i]["value_loss"] for i in everyone) / N,
            "time/admm_s": time.perf_counter() - t1,
            "time/iteration_s": time.perf_counter() - t0,
        }
        return obs, metrics

    try:
        while not run.finished:
            start = (env_snapshot(env), generator.get_state(), order_generator.get_state(), obs.clone())
            for attempt in range(dcfg.max_restarts + 1):
                courier.log.clear()
                try:
                    obs, metrics = iteration(obs)
                    break
                except IterationLost as err:
                    log.warning("%s; every agent rolls back and the iteration runs again (attempt %d)", err, attempt + 2)
                    env_restore(env, start[0])
                    generator.set_state(start[1])
                    order_generator.set_state(start[2])
                    obs = start[3].clone()
                    courier.call("rollback", {i: (run.iteration,) for i in everyone})
            else:
                raise IterationLost(f"the iteration failed {dcfg.max_restarts + 1} times")
            metrics["dist/restarts"] = float(pool.total_restarts)
            run.step(T * B, metrics)
            run.maybe_evaluate(LazyPolicy(lambda: gather()[1]))
            run.maybe_checkpoint(snapshot)
        return gather()[1]
    finally:
        if own_store:
            shutil.rmtree(store, ignore_errors=True)
