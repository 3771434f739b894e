"""MADDPG / DDPG: pure maths against hand computations, Gumbel straight-through gradients, per-agent
stacks vs separate nets, policy inference on a known policy, determinism, frozen opponents from
checkpoints (and the mismatch error), and learning a one-step cooperative game."""

from dataclasses import dataclass

import gymnasium.spaces as gspaces
import numpy as np
import pytest
import torch
from torch import nn

from maestro.algos.maddpg import (
    Config,
    Policy,
    StackedMLP,
    clip_grad_norm_per_member,
    critic_target,
    inference_loss,
    load_frozen_policy,
    soft_update,
    train_ddpg,
    train_maddpg,
)
from maestro.core.run import Run, RunConfig
from maestro.envs.api import BatchedEnv, group_spec
from maestro.nn.gumbel import gumbel_noise, gumbel_softmax
from maestro.spec import EnvSpec
from tiny_envs import MatchConfig, MatchEnv
from toy_env import ToyConfig, ToyEnv


# ---------------------------------------------------------------------- a one-step cooperative game
@dataclass(frozen=True)
class CoopConfig:
    continuous: bool = False
    """Box(0, 1, (1,)) actions instead of Discrete(3)"""


class CoopEnv(BatchedEnv):
    """Two groups ("lead" 1 agent, "follow" 2 agents) see a shared context c in {0, 1, 2} (one-hot).

    Discrete: the team reward (all agents) is 1 if lead plays c and both followers play (c + 1) % 3,
    else 0 (random play: 1/27). Continuous: reward -(mean squared distance of each action to c / 2 for
    the lead and to 1 - c / 2 for the followers). Episodes last one step and terminate.
    """

    def __init__(self, cfg=CoopConfig(), num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        sp = gspaces.Box(0.0, 1.0, (1,), dtype=np.float32) if cfg.continuous else gspaces.Discrete(3)
        self.spec = EnvSpec("coop", {"lead": group_spec("lead", 1, 3, sp), "follow": group_spec("follow", 2, 4, sp)}, 1, (3,), ("success",))
        self.c = torch.zeros(num_envs, dtype=torch.long)

    def _reset_copies(self, mask):
        fresh = torch.randint(0, 3, (self.num_envs,), generator=self.rng)
        self.c = torch.where(mask, fresh, self.c)

    def _step_world(self, actions):
        a, f = actions["lead"], actions["follow"]
        if self.cfg.continuous:
            t = self.c.float() / 2
            err = (a[:, 0, 0] - t) ** 2 + ((f[..., 0] - (1 - t)[:, None]) ** 2).sum(1)
            r, ok = -err / 3, err < 0.03
        else:
            ok = (a[:, 0] == self.c) & (f == ((self.c + 1) % 3)[:, None]).all(1)
            r = ok.float()
        return {"lead": r[:, None], "follow": r[:, None].expand(-1, 2)}, torch.ones(self.num_envs, dtype=torch.bool), {"success": ok.float()}

    def _observe(self):
        oh = torch.nn.functional.one_hot(self.c, 3).float()
        return {"lead": oh[:, None], "follow": torch.cat([oh, torch.ones(self.num_envs, 1)], 1)[:, None].expand(-1, 2, -1).clone()}

    def _global_state(self):
        return torch.nn.functional.one_hot(self.c, 3).float()

    def _get_sim_state(self):
        return {"c": self.c}

    def _set_sim_state(self, s):
        self.c = s["c"]

    def render(self):
        return np.zeros((4, 4, 3), dtype=np.uint8)


SMALL = dict(hidden=(32, 32), batch_size=128, warmup_steps=256, update_every=64, updates_per_step=0.125, actor_lr=3e-3, critic_lr=3e-3, buffer_size=20_000)


def _train(algo, make, cfg, steps, B=32, seed=0, directory=None, deterministic_eval=True):
    rc = RunConfig(env_steps=steps, num_envs=B, eval_episodes=256, eval_deterministic=deterministic_eval, progress=False, tensorboard=False)
    with Run(rc, directory, seed=seed, make_env=make) as run:
        policy = algo(cfg, make(B, seed), run)
    return policy, run


# ---------------------------------------------------------------------- pure maths
def test_critic_target_hand_computed():
    r = torch.tensor([1.0, 2.0, -1.0])
    term = torch.tensor([False, True, False])
    q = torch.tensor([10.0, 10.0, 4.0])
    # 1 + 0.9 * 10; terminated: 2; truncated/ongoing bootstraps: -1 + 0.9 * 4
    assert torch.allclose(critic_target(r, term, q, 0.9), torch.tensor([10.0, 2.0, 2.6]))


def test_soft_update_is_polyak_averaging():
    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    soft_update(target, online, 0.01)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.99 * b + 0.01 * o, atol=1e-7)
    soft_update(target, online, 1.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))


def test_gumbel_softmax_straight_through_forward_one_hot_backward_softmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, requires_grad=True)
    g = gumbel_noise(logits.shape, torch.Generator().manual_seed(1))
    w = torch.randn(6, 5)
    y = gumbel_softmax(logits, 0.7, hard=True, noise=g)
    assert torch.equal(y, torch.nn.functional.one_hot((logits + g).argmax(-1), 5).float())  # forward: one-hot
    (grad_hard,) = torch.autograd.grad((y * w).sum(), logits)
    soft = torch.softmax((logits + g) / 0.7, -1)
    (grad_soft,) = torch.autograd.grad((soft * w).sum(), logits)
    assert torch.allclose(grad_hard, grad_soft, atol=1e-6)  # backward: the softmax's gradient
    # and by hand: d softmax_k / d z_j = p_k (delta_kj - p_j) / t
    p = soft.detach()
    by_hand = p * (w - (p * w).sum(-1, keepdim=True)) / 0.7
    assert torch.allclose(grad_hard, by_hand, atol=1e-6)


def test_hard_gumbel_samples_follow_the_categorical():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(40_000, 3)
    y = gumbel_softmax(logits, 1.0, hard=True, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y.mean(0), torch.tensor([0.6, 0.3, 0.1]), atol=0.01)


def test_stacked_mlp_equals_separate_networks_and_per_member_clipping():
    torch.manual_seed(0)
    net = StackedMLP(3, 4, (8,), 2)
    x = torch.randn(3, 5, 4)
    y = net(x)
    for m in range(3):
        h = torch.relu(x[m] @ net.weights[0][m] + net.biases[0][m])
        assert torch.allclose(y[m], h @ net.weights[1][m] + net.biases[1][m], atol=1e-6)
    assert torch.allclose(net(x[[2, 0]], index=torch.tensor([2, 0])), y[[2, 0]], atol=1e-6)
    (y.pow(2).sum() * torch.tensor([1.0, 100.0, 0.001])[:, None, None]).sum().backward()
    per_member = [torch.cat([p.grad[m].reshape(-1) for p in net.parameters()]).norm() for m in range(3)]
    norms = clip_grad_norm_per_member(list(net.parameters()), 1.0)
    assert torch.allclose(norms, torch.stack(per_member), rtol=1e-5)
    after = [torch.cat([p.grad[m].reshape(-1) for p in net.parameters()]).norm() for m in range(3)]
    for m in range(3):
        assert float(after[m]) == pytest.approx(min(1.0, float(per_member[m])), rel=1e-4)


# ---------------------------------------------------------------------- policy inference
def test_policy_inference_converges_to_a_fixed_known_policy():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # discrete: agent j samples a ~ softmax(W o) for a fixed W (a known stochastic policy)
    W = torch.randn(5, 4, generator=g) * 1.5
    net = StackedMLP(2, 5, (32,), 4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    members, weight = torch.tensor([0, 1]), torch.tensor([1.0, 0.0])  # member 1 approximates itself: no loss
    for _ in range(600):
        obs = torch.randn(2, 128, 5, generator=g)
        a = torch.multinomial(torch.softmax(obs @ W, -1).reshape(-1, 4), 1, generator=g).reshape(2, 128)
        loss = inference_loss(net, None, members, obs, torch.nn.functional.one_hot(a, 4).float(), weight, 1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    obs = torch.randn(2, 2000, 5, generator=g)
    with torch.no_grad():
        probs = torch.softmax(net(obs), -1)[0]
    tv = 0.5 * (probs - torch.softmax(obs[0] @ W, -1)).abs().sum(-1).mean()
    assert tv < 0.05, tv  # total variation to the true policy (uniform guessing: about 0.5)
    # continuous: a deterministic Box policy a = sigmoid(2 o_0 - o_1), the Gaussian mean must match it
    net = StackedMLP(1, 2, (32,), 1)
    log_std = nn.Parameter(torch.zeros(1, 1))
    opt = torch.optim.Adam(list(net.parameters()) + [log_std], lr=1e-2)
    box = torch.sigmoid
    for _ in range(400):
        obs = torch.randn(1, 256, 2, generator=g)
        a = torch.sigmoid(2 * obs[..., :1] - obs[..., 1:])
        loss = inference_loss(net, log_std, torch.tensor([0]), obs, a, torch.ones(1), 1e-3, box)
        opt.zero_grad()
        loss.backward()
        opt.step()
    obs = torch.randn(1, 2000, 2, generator=g)
    with torch.no_grad():
        err = (box(net(obs)) - torch.sigmoid(2 * obs[..., :1] - obs[..., 1:])).abs().mean()
    assert err < 0.03, err


# ---------------------------------------------------------------------- training
def test_determinism_same_seed_same_parameters():
    make = lambda n, s: ToyEnv(ToyConfig(), n, s)  # noqa: E731  (discrete and continuous groups)
    cfg = Config(**{**SMALL, "warmup_steps": 64, "batch_size": 32}, policy_inference=True, ensemble_size=2, epsilon=0.1, noise_rate=0.1)
    p1, _ = _train(train_maddpg, make, cfg, 600, B=8)
    p2, _ = _train(train_maddpg, make, cfg, 600, B=8)
    p3, _ = _train(train_maddpg, make, cfg, 600, B=8, seed=1)
    s1, s2, s3 = p1.state_dict(), p2.state_dict(), p3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_ensemble_subpolicies_are_drawn_per_episode_and_copy():
    env = ToyEnv(ToyConfig(), 64, 0)
    from maestro.spec import group_layout

    policy = Policy(group_layout(env.spec), {"hidden": [8], "ensemble_size": 3, "continuous_head": "sigmoid"})
    g = torch.Generator().manual_seed(0)
    obs = env.reset()
    _, h = policy.act(obs, None, None, generator=g)
    sub = h["sub"]["walker"]
    assert sub.shape == (64, 2) and set(sub.unique().tolist()) == {0, 1, 2}
    _, h2 = policy.act(obs, None, h, generator=g)
    assert torch.equal(h2["sub"]["walker"], sub)  # kept within an episode
    done = torch.arange(64) < 32
    h3 = policy.reset_hidden(h2, done, g)
    assert torch.equal(h3["sub"]["walker"][32:], sub[32:]) and not torch.equal(h3["sub"]["walker"][:32], sub[:32])


@pytest.mark.parametrize("algo,continuous,threshold", [(train_maddpg, False, 0.9), (train_maddpg, True, -0.02), (train_ddpg, False, 0.5)])
def test_learns_one_step_cooperative_game(algo, continuous, threshold):
    # discrete: random play succeeds 1/27 of the time (reward 0.037), optimum 1;
    # continuous: random actions in [0, 1] score about -0.2, optimum 0. DDPG's local critics cannot
    # see the partners' actions, so it coordinates more slowly: a lower bar within the same budget
    make = lambda n, s: CoopEnv(CoopConfig(continuous), n, s)  # noqa: E731
    cfg = Config(**SMALL, epsilon=0.1, noise_rate=0.2, gamma=0.0 if continuous else 0.95)
    _, run = _train(algo, make, cfg, 6_000 if continuous else 4_000)
    assert run.last_eval["eval/episode_return/lead"] >= threshold, run.last_eval
    assert run.last_eval["eval/episode_return/follow"] >= threshold, run.last_eval


def test_policy_inference_and_ensembles_learn_the_game():
    make = lambda n, s: CoopEnv(CoopConfig(), n, s)  # noqa: E731
    cfg = Config(**SMALL, epsilon=0.1, policy_inference=True, ensemble_size=2)
    _, run = _train(train_maddpg, make, cfg, 5_000)
    assert run.last_eval["eval/episode_return/lead"] >= 0.8, run.last_eval


# ---------------------------------------------------------------------- frozen opponents
def test_checkpointed_group_loads_as_frozen_opponent_and_acts_identically(tmp_path):
    make = lambda n, s: ToyEnv(ToyConfig(), n, s)  # noqa: E731
    cfg = Config(**{**SMALL, "warmup_steps": 64, "batch_size": 32}, ensemble_size=2)
    prey, _ = _train(train_maddpg, make, cfg, 400, B=8, directory=tmp_path / "prey")
    loaded = load_frozen_policy(tmp_path / "prey")
    frozen_cfg = Config(**{**SMALL, "warmup_steps": 64, "batch_size": 32}, frozen={"pusher": str(tmp_path / "prey")})
    trained, run = _train(train_maddpg, make, frozen_cfg, 400, B=8, directory=tmp_path / "pred")
    assert trained.trained == ["walker"] and "pusher" in trained.frozen_policies
    env = make(16, 5)
    obs = env.reset()
    a0, h0 = prey.act(obs, None, None, generator=torch.Generator().manual_seed(3))
    a1, _ = loaded.act(obs, None, None, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    h = {"sub": {"walker": torch.zeros(16, 2, dtype=torch.long)}, "frozen": {"pusher": h0}}
    a2, _ = trained.act(obs, None, h, deterministic=True)
    assert torch.equal(a0["pusher"], a1["pusher"]) and torch.equal(a0["pusher"], a2["pusher"])
    # the frozen group is saved inside the trained policy's checkpoint and comes back identical
    again = Policy.load(run.last_checkpoint)
    a3, _ = again.act(obs, None, h, deterministic=True)
    assert torch.equal(a3["pusher"], a0["pusher"]) and torch.equal(a3["walker"], a2["walker"])
    # the frozen group's weights did not move during training
    for k, v in prey.state_dict().items():
        assert torch.equal(trained.frozen_policies["pusher"].state_dict()[k], v)


def test_mismatched_frozen_checkpoint_names_both_shapes(tmp_path):
    make3 = lambda n, s: MatchEnv(MatchConfig(n_targets=3), n, s)  # noqa: E731
    _train(train_ddpg, make3, Config(**SMALL), 64, B=8, directory=tmp_path / "m3")
    # a two-group env whose "agent" group has 4-dim observations and Discrete(4) actions
    make4 = lambda n, s: TwoGroupMatch(n, s)  # noqa: E731
    with pytest.raises(ValueError, match=r"observation shape \(3,\) and action space Discrete\(3\).*observation shape \(4,\) and action space Discrete\(4\)"):
        _train(train_maddpg, make4, Config(**SMALL, frozen={"agent": str(tmp_path / "m3")}), 64, B=8)


class TwoGroupMatch(MatchEnv):
    def __init__(self, num_envs=1, seed=0):
        super().__init__(MatchConfig(n_agents=2, n_targets=4), num_envs, seed)
        spec = self.spec
        self.spec = EnvSpec("match2", {"agent": spec.groups["agent"], "other": group_spec("other", 1, 2, gspaces.Discrete(2))}, spec.max_steps, spec.state_shape)

    def _step_world(self, actions):
        r, term, info = super()._step_world({"agent": actions["agent"]})
        return {**r, "other": torch.zeros(self.num_envs, 1)}, term, {}

    def _observe(self):
        return {**super()._observe(), "other": torch.zeros(self.num_envs, 1, 2)}


def test_simple_tag_logs_the_papers_metrics():
    import maestro

    rows = []
    make = lambda n, s: maestro.make_env("simple_tag", num_envs=n, seed=s, max_cycles=10, continuous_actions=True)  # noqa: E731
    rc = RunConfig(env_steps=400, num_envs=8, eval_episodes=4, progress=False, tensorboard=False)
    with Run(rc, None, seed=0, make_env=make) as run:
        run.log_metrics = lambda m, _log=run.log_metrics: (rows.append(dict(m)), _log(m))[1]  # type: ignore[method-assign]
        policy = train_maddpg(Config(**{**SMALL, "warmup_steps": 80, "batch_size": 16}, epsilon=0.1, noise_rate=0.1), make(8, 0), run)
    train = [r for r in rows if "train/episode_return/adversary" in r]
    assert train and all(k in train[-1] for k in ("train/episode_return/adversary_sum", "train/episode_return/prey", "train/touches_per_episode"))
    assert train[-1]["train/episode_return/adversary_sum"] == pytest.approx(3 * train[-1]["train/episode_return/adversary"])
    # each predator gets +10 per predator-prey touch: its episode return is 10 x touches per episode
    assert train[-1]["train/episode_return/adversary"] == pytest.approx(10 * train[-1]["train/touches_per_episode"], abs=1e-3)
    assert any("eval/episode_return/adversary_sum" in r for r in rows)
    acts, _ = policy.act(make(4, 1).reset())
    assert acts["adversary"].min() >= 0 and acts["adversary"].max() <= 1 and acts["prey"].shape == (4, 1, 5)


def test_learning_rates_fall_linearly_to_lr_end_factor(tmp_path):
    import json

    make = lambda n, s: ToyEnv(ToyConfig(), n, s)  # noqa: E731
    cfg = Config(**{**SMALL, "warmup_steps": 64, "batch_size": 32}, policy_inference=True, lr_end_factor=0.25)
    _train(train_maddpg, make, cfg, 800, B=8, directory=tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "train/lr/actor" in x]
    assert rows and len(rows) > 3
    per_iteration = rows[0]["env_steps"]  # one episode length of 8 copies
    for r in rows:  # each iteration runs at the fraction of the budget spent before it
        frac = (r["env_steps"] - per_iteration) / 800
        expect = 1.0 + (0.25 - 1.0) * frac
        for net, lr in (("actor", SMALL["actor_lr"]), ("critic", SMALL["critic_lr"]), ("infer", cfg.inference_lr)):
            assert r[f"train/lr/{net}"] == pytest.approx(lr * expect, rel=1e-6), (r["env_steps"], net)
    with pytest.raises(ValueError, match="lr_end_factor"):
        Config(lr_end_factor=1.5)
