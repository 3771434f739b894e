"""The master-slave transfer methods (papers/000 Sec. 3.2) and the PPO pieces they need: partial
weight copy, the shared backbone of multi-tasking, gradient momentum against a hand-computed
example, running normalisers, and a short learning test of PPO for continuous control."""

from dataclasses import dataclass

import gymnasium.spaces as gspaces
import numpy as np
import pytest
import torch

import maestro
from maestro.algos import incompatibility, transfer
from maestro.algos.ppo import train_ippo
from maestro.core import ppo_family as ppo
from maestro.core.master_slave import check_master, overlap_index, pair_parameters
from maestro.core.evaluate import evaluate
from maestro.core.gradient_momentum import GradientMomentum
from maestro.core.normalise import ReturnScaler
from maestro.core.run import Run, RunConfig
from maestro.core.seeding import make_generator
from maestro.envs.api import BatchedEnv, group_spec
from maestro.envs.mujoco.common import agent_obs, load_model, mask_index, reset_noise, restore_sim_state, side_view, sim_state
from maestro.envs.mujoco.physics import BatchedPhysics, gymnasium_asset
from maestro.nn.running_norm import RunningNorm
from maestro.nn.stem_backbone_head import StemBackboneHead, copy_overlap
from maestro.spec import EnvSpec

TINY = transfer.Config(hidden=(8, 8, 8), rollout_steps=4, epochs=1, minibatches=2)


# ---------------------------------------------------------------------- partial weight copy
def test_copy_overlap_puts_exactly_the_source_weights_in_the_overlap_and_zeros_elsewhere():
    torch.manual_seed(0)
    src, dst = StemBackboneHead(3, (4, 4), 2, "tanh"), StemBackboneHead(5, (4, 4), 3, "tanh")
    for p in [*src.parameters(), *dst.parameters()]:
        torch.nn.init.normal_(p)  # non-zero biases everywhere, so that a missed zero shows
    cols, rows = [0, 2, 4], [1, 2]
    copy_overlap(src, dst, cols, rows)
    w = dst.stem_linear().weight
    assert torch.equal(w[:, cols], src.stem_linear().weight) and torch.equal(w[:, [1, 3]], torch.zeros(4, 2))
    assert torch.equal(dst.stem_linear().bias, src.stem_linear().bias)
    assert all(torch.equal(a, b) for a, b in zip(dst.backbone.parameters(), src.backbone.parameters()))
    assert torch.equal(dst.head.weight[rows], src.head.weight) and torch.equal(dst.head.weight[0], torch.zeros(4))
    assert torch.equal(dst.head.bias[rows], src.head.bias) and float(dst.head.bias[0].detach()) == 0.0
    x = torch.randn(6, 5)
    torch.testing.assert_close(dst(x)[:, rows], src(x[:, cols]))  # the extra inputs are ignored
    assert torch.equal(dst(x)[:, 0], torch.zeros(6))  # the extra output starts at 0
    with pytest.raises(ValueError, match="indices"):
        copy_overlap(src, dst, [0, 1], rows)


def test_pretraining_master_starts_acting_as_the_humanoid_slave():
    master = ppo.build_learner(TINY, maestro.make_env("humanoid", num_envs=2, seed=0), centralised=False)
    slave = ppo.build_learner(TINY, maestro.make_env("humanoid", num_envs=2, seed=1, role="slave"), centralised=False)
    g = torch.Generator().manual_seed(0)
    slave.policy.obs_norm["agent"].update(torch.randn(50, 1, 45, generator=g) * 3 + 1)
    with torch.no_grad():
        slave.policy.log_std["agent"].fill_(-0.7)
    obs_index, action_index = master.env.slave_indices()
    transfer.start_from_slave(master, slave, obs_index, action_index)
    full = torch.randn(5, 1, 348, generator=g) * 2
    mean_m = master.policy.dist_params("agent", full)
    mean_s = slave.policy.dist_params("agent", full[..., :45])
    torch.testing.assert_close(mean_m[..., :11], mean_s)
    assert torch.equal(mean_m[..., 11:], torch.zeros(5, 1, 6))
    assert torch.equal(master.policy.log_std["agent"][:11], slave.policy.log_std["agent"])
    torch.testing.assert_close(master.critics["agent"](master.policy.actor_input("agent", full)), slave.critics["agent"](slave.policy.actor_input("agent", full[..., :45])))


# ---------------------------------------------------------------------- multi-tasking
@pytest.mark.parametrize("name, parts", [("walker2d", ["stem", "backbone"]), ("humanoid", ["backbone"])])
def test_multitasking_shared_backbone_receives_gradients_from_both_losses(name, parts):
    master = ppo.build_learner(TINY, maestro.make_env(name, num_envs=2, seed=0), centralised=False)
    slave = ppo.build_learner(TINY, maestro.make_env(name, num_envs=2, seed=1, role="slave"), centralised=False)
    assert transfer.share_networks(master, slave) == parts
    shared = master.policy.actors["agent"].backbone[0].weight
    assert slave.policy.actors["agent"].backbone[0].weight is shared
    assert master.policy.actors["agent"].head is not slave.policy.actors["agent"].head
    gen = make_generator(0)
    master.start()
    slave.start()
    batches = [(le.policy, le.critics, le.collect(gen)[1]) for le in (master, slave)]
    grads = []

    def step(losses):
        for loss in losses:  # each loss alone, then both together (what multitasking's Adam sees)
            shared.grad = None
            loss.backward(retain_graph=True)
            grads.append(shared.grad.clone())
        shared.grad = None
        torch.stack(losses).sum().backward()
        grads.append(shared.grad.clone())
        return {}

    ppo.ppo_epochs(TINY, batches, gen, step)
    g_master, g_slave, g_both = grads[:3]
    assert g_master.abs().sum() > 0 and g_slave.abs().sum() > 0 and not torch.allclose(g_master, g_slave)
    torch.testing.assert_close(g_both, g_master + g_slave)


# ---------------------------------------------------------------------- gradient momentum
def test_gradient_momentum_two_steps_by_hand():
    W = torch.nn.Parameter(torch.tensor([1.0, -2.0]))  # master tensor paired with the slave's w
    M = torch.nn.Parameter(torch.tensor([0.0]))  # master tensor with no slave counterpart
    w = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    u = torch.nn.Parameter(torch.tensor([3.0]))  # slave tensor with no master counterpart
    opt = GradientMomentum([W, M], [[w, None]], [[u]], lr=0.1, beta=0.5)
    # step 1: S = [1, 0], s = [0, 2]; V = 0.5*0 + 0.5*S = [0.5, 0]; v = 0.5*V + 0.5*s = [0.25, 1]
    #   W = W - 0.1 v = [0.975, -2.1]; w = w - 0.1 V = [0.45, 0.5]
    #   M: V_M = 0.5*2 = 1, M = -0.1; u: v_u = 0.5*4 = 2, u = 3 - 0.2 = 2.8
    W.grad, w.grad, M.grad, u.grad = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([2.0]), torch.tensor([4.0])
    opt.step()
    torch.testing.assert_close(W.data, torch.tensor([0.975, -2.1]))
    torch.testing.assert_close(w.data, torch.tensor([0.45, 0.5]))
    torch.testing.assert_close(M.data, torch.tensor([-0.1]))
    torch.testing.assert_close(u.data, torch.tensor([2.8]))
    # step 2: S = [-1, 2], s = [2, 0]; V = 0.5*[0.5, 0] + 0.5*S = [-0.25, 1]; v = 0.5*V + 0.5*s = [0.875, 0.5]
    #   W = [0.975 - 0.0875, -2.1 - 0.05]; w = [0.45 + 0.025, 0.5 - 0.1]
    #   M: grad 0, V_M = 0.5; M = -0.15; u: grad 0, v_u = 1, u = 2.7
    W.grad, w.grad, M.grad, u.grad = torch.tensor([-1.0, 2.0]), torch.tensor([2.0, 0.0]), None, None
    opt.step()
    torch.testing.assert_close(W.data, torch.tensor([0.8875, -2.15]))
    torch.testing.assert_close(w.data, torch.tensor([0.475, 0.4]))
    torch.testing.assert_close(M.data, torch.tensor([-0.15]))
    torch.testing.assert_close(u.data, torch.tensor([2.7]))
    state = opt.state_dict()
    again = GradientMomentum([W, M], [[w, None]], [[u]], lr=0.5, beta=0.1)
    again.load_state_dict(state)
    assert again.lr == 0.1 and torch.equal(again.V[0], torch.tensor([-0.25, 1.0]))


def test_gradient_momentum_pairs_part_of_a_tensor_by_hand():
    """Two slaves cover entries {0, 2} and {2} of a master tensor of 3: entry 1 moves along V alone,
    entry 0 along one slave's gradient, entry 2 along the mean of both; the slaves along V's part."""
    W = torch.nn.Parameter(torch.zeros(3))
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    idx_a, idx_b = (torch.tensor([0, 2]),), (torch.tensor([2]),)
    opt = GradientMomentum([W], [[a], [b]], lr=1.0, beta=0.5, index=[[idx_a], [idx_b]])
    W.grad, a.grad, b.grad = torch.tensor([2.0, 4.0, 6.0]), torch.tensor([10.0, 20.0]), torch.tensor([40.0])
    opt.step()
    V = torch.tensor([1.0, 2.0, 3.0])  # 0.5 * S
    # entry 0: 0.5*1 + 0.5*10; entry 1: V = 2; entry 2: 0.5*3 + 0.5*mean(20, 40)
    torch.testing.assert_close(W.data, -torch.tensor([5.5, 2.0, 16.5]))
    torch.testing.assert_close(a.data, -V[[0, 2]])
    torch.testing.assert_close(b.data, -V[[2]])


def test_overlap_pairing_covers_the_humanoid_slaves_stems_and_heads():
    master_env, slave_env = maestro.make_env("humanoid", role="master"), maestro.make_env("humanoid", role="slave")
    cfg = transfer.Config(hidden=(8, 8))
    master, slave = (ppo.build_learner(cfg, e, centralised=False) for e in (master_env, slave_env))
    paired, alone, _ = pair_parameters(master, slave)
    assert len(alone) == 5  # the actor's stem weight, head weight and bias, its log-std, the critic's stem weight
    paired, alone, index = pair_parameters(master, slave, overlap_index(master, *master_env.slave_indices()))
    assert not alone and all(p is not None for p in paired)
    m_params = [*master.params()[0], *master.params()[1]]
    for m, s, ix in zip(m_params, paired, index):
        assert (m if ix is None else m[ix]).shape == s.shape
    GradientMomentum(m_params, [paired], index=[index])  # the shapes agree


def test_gradient_momentum_rejects_mismatched_pairs():
    with pytest.raises(ValueError, match="shape"):
        GradientMomentum([torch.nn.Parameter(torch.zeros(2))], [[torch.nn.Parameter(torch.zeros(3))]])


# ---------------------------------------------------------------------- normalisers
def test_running_norm_per_feature_statistics_match_numpy():
    norm = RunningNorm(3, clip=100.0)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 5, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 2 for _ in range(3)]
    ws = [(torch.rand(4, 5, generator=g) < 0.6) for _ in range(3)]
    for x, w in zip(xs, ws):
        norm.update(x, w)
    flat = np.concatenate([x[w].numpy() for x, w in zip(xs, ws)])
    np.testing.assert_allclose(norm.mean.numpy(), flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), flat.var(0), rtol=1e-5)
    np.testing.assert_allclose(norm(torch.tensor(flat[:2])).numpy(), (flat[:2] - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-8), rtol=1e-4)


def test_return_scaler_divides_by_the_std_of_discounted_returns():
    scaler = ReturnScaler(gamma=0.5, clip=100.0, eps=0.0)
    rewards = torch.ones(4, 1, 1)
    done = torch.tensor([[False], [False], [True], [False]])
    out = scaler.scale(rewards, done)
    returns = np.array([1.0, 1.5, 1.75, 1.0])  # the return restarts after the episode ends
    np.testing.assert_allclose(out.flatten().numpy(), 1.0 / returns.std(), rtol=1e-6)
    assert float(scaler.returns) == 1.0


def test_transfer_methods_refuse_envs_without_roles_and_slave_roles():
    assert incompatibility("multitasking", maestro.make_env("simple_spread", continuous_actions=True).spec) is not None
    assert incompatibility("multitasking", maestro.make_env("walker2d").spec) is None
    with pytest.raises(ValueError, match="role"):
        check_master(maestro.make_env("walker2d", role="slave"))


# ---------------------------------------------------------------------- learning
@dataclass(frozen=True)
class PendulumConfig:
    max_steps: int = 100


class Pendulum(BatchedEnv):
    """Gymnasium's InvertedPendulum model (obs ``qpos, qvel``, force in [-3, 3], reward 1 per step,
    the episode ends when the pole leaves |angle| <= 0.2) with 100-step episodes."""

    def __init__(self, cfg, num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        self.physics = BatchedPhysics(load_model(gymnasium_asset("inverted_pendulum.xml")), 2, num_envs)
        box = gspaces.Box(-3.0, 3.0, (1,), dtype=np.float32)
        self.spec = EnvSpec("pendulum", {"agent": group_spec("agent", 1, 4, box)}, max_steps=cfg.max_steps, state_shape=(0,))
        self._obs = np.zeros((num_envs, 4))

    def _physics_obs(self):
        return np.concatenate([self.physics.gather("qpos"), self.physics.gather("qvel")], 1)

    def _reset_copies(self, mask):
        i = mask_index(mask)
        self.physics.reset(i, reset_noise(self.rng, len(i), 2, 0.01), reset_noise(self.rng, len(i), 2, 0.01))
        self._obs[i] = self._physics_obs()[i]

    def _step_world(self, actions):
        self.physics.step(actions["agent"][:, 0].numpy().astype(np.float64))
        self._obs = self._physics_obs()
        fell = torch.as_tensor(np.abs(self._obs[:, 1]) > 0.2)
        return {"agent": torch.ones(self.num_envs, 1)}, fell, {}

    def _observe(self):
        return agent_obs(self._obs, self.device)

    def _global_state(self):
        return torch.zeros(self.num_envs, 0)

    def _get_sim_state(self):
        return sim_state(self.physics, {"obs": self._obs}, self.device)

    def _set_sim_state(self, state):
        restore_sim_state(self.physics, state, {"obs": self._obs})

    def render(self):
        return side_view(self.physics)


def test_ppo_with_mujoco_settings_learns_to_balance_a_pendulum():
    """PPO with the transfer methods' networks and normalisers: from about 6 steps (random) to
    balancing for most of the 100 steps in 4096 env steps (a few seconds; seeds 0-2 reach 75-100)."""
    cfg = transfer.Config(rollout_steps=64, minibatches=4, lr=1e-3, critic_lr=1e-3, lr_end_factor=1.0)
    make = lambda n, s: Pendulum(PendulumConfig(), n, s)  # noqa: E731
    with Run(RunConfig(env_steps=4096, num_envs=8, eval_episodes=0, progress=False, tensorboard=False), None, seed=0) as run:
        policy = train_ippo(cfg, make(8, 0), run)
    lengths = evaluate(policy, make(16, 3), seed=3, deterministic=True)["episode_length"]
    assert lengths.mean() >= 60, lengths
