"""The parts centralised TRPO, independent TRPO and MATRPO share (Li & He, arXiv 2010.07916, Sec. V-A
and Table I): their settings, the trainer's state, on-policy batches of ``T`` steps of ``B`` env copies
with all agents on one axis, private value networks and private GAE advantages.

Each iteration of centralised TRPO, independent TRPO and MATRPO samples one batch (Table I: 100
paths of 100 steps, ``M = T * B = 10k`` samples), then every agent, on its own data only:

1. evaluates its value net ``V_i(o_i)`` on its observations and on the observations its steps
   reached (``final_obs``, to bootstrap through truncations),
2. computes GAE advantages ``A_i`` and lambda-returns on its private reward ``r_i``
   (Schulman et al. 2016, arXiv 1506.02438; eq. 15 of the MATRPO paper; ``maestro.core.returns.gae``),
3. regresses ``V_i`` on those returns (the MATRPO authors' ``vfupdate``: Adam, 3 epochs of
   minibatches of 64, the last partial minibatch dropped).

``AgentValues`` holds the ``K`` value nets as the rows of one parameter tensor (``StackedMLP``); Adam
is elementwise, so one Adam over the stacked rows is ``K`` separate Adams. Every randomness an agent
uses (initial weights, minibatch order) comes from its own generator (``derived_seed(seed, ..., i)``),
so that an agent holding only its own row (``distributed.mode=decentralised``) computes the same
numbers.

``TrpoAgents`` is what a trainer of the family holds between iterations (policy, value nets, the
action generator, the batch buffer and the observations to act on next), with its checkpoint
``snapshot`` and its restore; each algorithm module owns its loop and its policy update.

Shapes: ``(T, B, N, ...)`` time, env copies, agents; agent-major ``(K, ...)`` for stacked networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from maestro.core.episodes import EpisodeStats
from maestro.core.checkpoint import tree_to_device
from maestro.core.joint_policy import AgentAxis, JointPolicy, Mode
from maestro.core.returns import gae
from maestro.core.run import Run, env_restore, env_snapshot
from maestro.core.seeding import derived_seed, make_generator
from maestro.nn.stacked import Activation, StackedMLP


@dataclass(frozen=True)
class TrpoFamilyConfig:
    """Settings every algorithm of the family shares. Defaults: the MATRPO paper's Table I (Li & He 2020,
    arXiv 2010.07916) for the navigation tasks, the rest from the authors' code (``hepengli/matrpo``)."""

    rollout_steps: int = 100
    """Steps ``T`` of every env copy per iteration (Table I: path length 100; the number of paths,
    100, is ``run.num_envs``, so an iteration is 10k env steps)."""
    max_kl: float = 0.003
    """KL bound ``delta`` of a TRPO step (Table I "stepsize": 0.003 navigation, 0.001 treasure collection)."""
    gamma: float = 0.995
    """Discount factor (Table I: 0.995)."""
    gae_lambda: float = 0.95
    """GAE lambda (the authors' code: 0.95)."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the policy and value networks (Sec. VI-A: two hidden layers of 128 units)."""
    activation: Activation = "selu"
    """Hidden activation (Sec. VI-A: SELU)."""
    cg_iterations: int = 10
    """Conjugate-gradient iterations of a TRPO step (the authors' code: 10)."""
    cg_damping: float = 0.01
    """Damping of the Fisher products (the authors' code: 0.01)."""
    fisher_every: int = 5
    """The Fisher products use every ``fisher_every``-th sample (the authors' code: 5)."""
    kl_factor: float = 1.5
    """The line search accepts a KL up to ``kl_factor * max_kl`` (the authors' code: 1.5)."""
    max_backtracks: int = 10
    """Step fractions tried by the line search, 1, 1/2, ... (the authors' code: 10)."""
    vf_lr: float = 3e-4
    """Adam step size of the value networks (the authors' code: 3e-4)."""
    vf_epochs: int = 3
    """Passes of the value regression over each batch (the authors' code: 3)."""
    vf_minibatch: int = 64
    """Minibatch size of the value regression (the authors' code: 64)."""

    def __post_init__(self) -> None:
        for name in ("rollout_steps", "cg_iterations", "fisher_every", "max_backtracks", "vf_epochs", "vf_minibatch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {self.gamma}, {self.gae_lambda}")
        for name in ("max_kl", "kl_factor", "vf_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.cg_damping < 0:
            raise ValueError(f"cg_damping must be >= 0, got {self.cg_damping}")


@dataclass
class AgentBatch:
    """One iteration's samples, preallocated and overwritten.

    Attributes:
        obs: ``(T, B, N, D)`` stacked observations acted on (``AgentAxis.stack_obs``).
        final_obs: ``(T, B, N, D)`` the observations each step reached, before any auto-reset.
        actions: ``(T, B, N)`` int64 joint actions.
        reward: ``(T, B, N)`` private rewards.
        terminated: ``(T, B)`` bool, the step ended its episode in a terminal state.
        done: ``(T, B)`` bool, terminated or truncated.
    """

    obs: Tensor
    final_obs: Tensor
    actions: Tensor
    reward: Tensor
    terminated: Tensor
    done: Tensor

    @classmethod
    def allocate(cls, T: int, B: int, axis: AgentAxis, device: torch.device | str) -> "AgentBatch":
        N, D = axis.n_agents, axis.obs_dim
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        return cls(z(T, B, N, D), z(T, B, N, D), z(T, B, N, dtype=torch.long), z(T, B, N), z(T, B, dtype=torch.bool), z(T, B, dtype=torch.bool))

    @property
    def num_samples(self) -> int:
        """``M = T * B``."""
        return self.done.numel()


@torch.no_grad()
def collect(env: Any, axis: AgentAxis, act: Callable[[Tensor], Tensor], batch: AgentBatch, obs: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Fill ``batch`` with ``T`` steps of every copy of ``env`` from stacked observations ``obs`` ``(B, N, D)``.

    ``act`` maps stacked observations ``(B, N, D)`` to joint actions ``(B, N)`` int64 (each agent's
    own component from its own policy). Returns the stacked observations to act on next and the
    statistics of the episodes that finished (``maestro.core.episodes``).
    """
    episodes = EpisodeStats(env.spec, env.device)
    for t in range(batch.done.shape[0]):
        actions = act(obs)
        batch.obs[t].copy_(obs)
        batch.actions[t].copy_(actions)
        out = env.step(axis.split(actions))
        batch.reward[t].copy_(axis.stack(out.reward))
        batch.final_obs[t].copy_(axis.stack_obs(out.final_obs))
        batch.terminated[t].copy_(out.terminated)
        batch.done[t].copy_(out.done)
        episodes.add(out.info, out.done)
        obs = axis.stack_obs(out.obs)
    return obs, episodes.summary("train")


class AgentValues:
    """``K`` agents' value networks ``V_i(o_i)`` as rows of one parameter, fitted by minibatch Adam.

    Args:
        agents: the agents' indices on the agent axis (seed the rows' generators).
        obs_dim: observation width ``D``.
        seed: the run's seed.
        hidden, activation: the networks (MATRPO: 2x128 SELU, as the policies).
        lr: Adam step size (the MATRPO authors' ``vf_stepsize``: 3e-4).
        device: where the parameters live.
    """

    def __init__(
        self,
        agents: Sequence[int],
        obs_dim: int,
        seed: int,
        hidden: tuple[int, ...] = (128, 128),
        activation: Activation = "selu",
        lr: float = 3e-4,
        device: torch.device | str = "cpu",
    ) -> None:
        self.agents = [int(i) for i in agents]
        self.net = StackedMLP(obs_dim, hidden, 1, activation)
        init = [make_generator(derived_seed(seed, "value", i)) for i in self.agents]
        self.theta = nn.Parameter(self.net.init(init, out_gain=1.0).to(device))
        self.optimiser = torch.optim.Adam([self.theta], lr=lr)
        self.generators = [make_generator(derived_seed(seed, "value-minibatches", i), device) for i in self.agents]

    def __call__(self, obs: Tensor) -> Tensor:
        """``(K, ..., D)`` agent-major observations -> values ``(K, ...)``."""
        return self.net(self.theta, obs).squeeze(-1)

    def fit(self, obs: Tensor, returns: Tensor, epochs: int, minibatch: int) -> Tensor:
        """Regress each row on its own data: ``obs`` ``(K, M, D)``, ``returns`` ``(K, M)``; returns the mean
        squared error of each row over the minibatches ``(K,)`` (detached).

        Each epoch every agent draws its own permutation of the ``M`` samples; ``M // minibatch``
        minibatches of ``minibatch`` samples follow (a last partial one is dropped, as the authors'
        ``iterbatches(include_final_partial_batch=False)``); one Adam step per minibatch on the sum of
        the rows' mean squared errors (each row's gradient is its own error's).
        """
        K, M = returns.shape
        if obs.shape[:2] != (K, M):
            raise ValueError(f"AgentValues.fit: obs {tuple(obs.shape)} and returns {tuple(returns.shape)}, expected (K, M, D) and (K, M)")
        if len(self.agents) != K:
            raise ValueError(f"AgentValues.fit: {K} rows of data for {len(self.agents)} value nets")
        losses = torch.zeros(K, device=returns.device)
        steps = 0
        for _ in range(epochs):
            order = torch.stack([torch.randperm(M, generator=g, device=g.device) for g in self.generators]).to(returns.device)
            for start in range(0, M - minibatch + 1, minibatch):
                index = order[:, start : start + minibatch]
                mb_obs = obs.gather(1, index.unsqueeze(-1).expand(K, minibatch, obs.shape[-1]))
                err = (self(mb_obs) - returns.gather(1, index)).pow(2).mean(1)
                self.optimiser.zero_grad(set_to_none=True)
                err.sum().backward()
                self.optimiser.step()
                losses += err.detach()
                steps += 1
        return losses / max(steps, 1)

    def state_dict(self) -> dict[str, Any]:
        """Parameters, optimiser and minibatch generators."""
        return {"theta": self.theta.detach().clone(), "optimiser": self.optimiser.state_dict(), "generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        self.optimiser.load_state_dict(state["optimiser"])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)


def agent_advantages(
    values: AgentValues, obs: Tensor, final_obs: Tensor, reward: Tensor, terminated: Tensor, done: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Each agent's GAE advantages and lambda-returns on its private reward and value net (no gradient).

    Args:
        values: the agents' value nets (``K`` rows).
        obs, final_obs: ``(K, T, B, D)`` agent-major observations acted on and reached.
        reward: ``(T, B, K)``.
        terminated, done: ``(T, B)``.

    Returns:
        ``(advantages, returns)``, both ``(T, B, K)``.
    """
    with torch.no_grad():
        v = values(obs).movedim(0, -1)
        v_next = values(final_obs).movedim(0, -1)
        return gae(reward, v, v_next, terminated, done, gamma, lam)


def normalise_rows(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / (std + eps)`` of each row ``(K, M)`` (an agent's advantages) with its own statistics
    (population std, as the MATRPO authors' ``np.std``); the rows are made contiguous first, so that a row
    alone (an agent in its own process) gets the same bits as in the stack."""
    if x.dim() != 2:
        raise ValueError(f"normalise_rows: x has shape {tuple(x.shape)}, expected (K, M)")
    x = x.contiguous()
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, correction=0, keepdim=True)
    return (x - mean) / (std + eps)


def advantage_moments(x: Tensor) -> Tensor:
    """``(3,)`` float64 ``[count, sum, sum of squares]`` of advantages ``x`` (any shape): all an agent
    shares of its advantages for pooled statistics (``pooled_statistics``)."""
    x = x.detach().reshape(-1).double()
    return torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64), x.sum(), (x * x).sum()])


def pooled_statistics(moments: Sequence[Tensor]) -> tuple[float, float]:
    """Mean and population std of the union of several agents' advantages from their
    ``advantage_moments``, added up in the order given (float64), so that a driver adding the agents'
    messages gets the in-process figure bit for bit."""
    if not moments:
        raise ValueError("pooled_statistics: no moments given")
    total = moments[0].clone()
    for m in moments[1:]:
        total = total + m
    n, s, sq = total.tolist()
    if n <= 0:
        raise ValueError(f"pooled_statistics: the count is {n}, expected > 0")
    mean = s / n
    return mean, max(sq / n - mean * mean, 0.0) ** 0.5


def normalise_with(x: Tensor, mean: float, std: float, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / (std + eps)`` with given statistics (``pooled_statistics``)."""
    return (x - mean) / (std + eps)


def agent_major(x: Tensor) -> Tensor:
    """``(T, B, K)`` -> contiguous ``(K, T * B)``: per-agent rows of samples in time-major order."""
    return x.reshape(-1, x.shape[-1]).t().contiguous()


def private_advantages(
    values: AgentValues, batch: AgentBatch, gamma: float, lam: float, epochs: int, minibatch: int
) -> tuple[Tensor, Tensor]:
    """Steps 1-3 of the module docstring for every agent of ``batch``: advantages ``(T, B, N)`` with the
    value nets before their fit, then the fit on the lambda-returns; returns ``(advantages, value_loss (N,))``."""
    T, B, N, D = batch.obs.shape
    obs, final_obs = batch.obs.movedim(2, 0), batch.final_obs.movedim(2, 0)
    advantages, returns = agent_advantages(values, obs, final_obs, batch.reward, batch.terminated, batch.done, gamma, lam)
    value_loss = values.fit(obs.reshape(N, T * B, D), returns.movedim(-1, 0).reshape(N, T * B), epochs, minibatch)
    return advantages, value_loss


class TrpoAgents:
    """A TRPO-family trainer's state: the policy (``mode``), the value nets, the action generator, the batch
    buffer and the stacked observations to act on next; restored from ``run`` when it resumes.

    Args:
        cfg: the algorithm's settings.
        env: the batched env (unmasked discrete actions, vector observations: ``AgentAxis.of``).
        run: the run (seed, restore).
        mode: the policy's mode (``maestro.core.joint_policy``).
    """

    def __init__(self, cfg: TrpoFamilyConfig, env: Any, run: Run, mode: Mode) -> None:
        device = env.device
        self.axis = AgentAxis.of(env.spec)
        N = self.axis.n_agents
        self.policy = JointPolicy(mode, self.axis, cfg.hidden, cfg.activation, seed=run.seed).to(device)
        self.values = AgentValues(range(N), self.axis.obs_dim, run.seed, cfg.hidden, cfg.activation, cfg.vf_lr, device)
        self.generator = make_generator(derived_seed(run.seed, "actions"), device)
        self.batch = AgentBatch.allocate(cfg.rollout_steps, env.num_envs, self.axis, device)
        self.cfg, self.env = cfg, env
        resumed = run.restore()
        self.resumed = resumed
        if resumed is None:
            self.obs = self.axis.stack_obs(env.reset())
        else:
            self.policy.load_state_dict(resumed["policy"]["weights"])
            self.values.load_state_dict(resumed["values"])
            self.generator.set_state(resumed["generator"])
            env_restore(env, resumed["env"])
            self.obs = tree_to_device(resumed["obs"], device)

    def snapshot(self) -> dict[str, Any]:
        """Everything the next iterations depend on (``run.maybe_checkpoint``)."""
        return {
            "policy": self.policy.policy_state(),
            "values": self.values.state_dict(),
            "generator": self.generator.get_state(),
            "env": env_snapshot(self.env),
            "obs": self.obs,
        }

    def sample(self) -> dict[str, float]:
        """Fill the batch (every agent acting from its own executed head); returns the episode statistics."""
        self.obs, stats = collect(self.env, self.axis, lambda o: self.policy.sample(o, self.generator), self.batch, self.obs)
        return stats

    def advantages(self) -> tuple[Tensor, Tensor]:
        """``private_advantages`` of the batch with the settings: ``(advantages (T, B, N), value_loss (N,))``."""
        cfg = self.cfg
        return private_advantages(self.values, self.batch, cfg.gamma, cfg.gae_lambda, cfg.vf_epochs, cfg.vf_minibatch)
