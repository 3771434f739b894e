"""Episodic policy gradient (MS-MARL Algorithm 1): returns by hand, the loss ignores dead agents and
invalid steps, every model learns a two-agent signalling game that needs communication (and the
independent controller does not), continuous Gaussian policies, action masks, the curriculum hook,
determinism, bitwise resume, recipes through ``maestro train``, and the Figure 6b plot."""

import json
from dataclasses import dataclass

import gymnasium.spaces as gspaces
import numpy as np
import pytest
import torch

import maestro
from maestro.spec import group_layout
from maestro.algos.reinforce import Config, Policy, batch_returns, mixed_returns, reinforce_loss, run_batch, train_reinforce
from maestro.reports.components import plot_action_components
from maestro.core import checkpoint as ckpt
from maestro.core.run import Run, RunConfig
from maestro.core.seeding import make_generator
from maestro.envs.api import BatchedEnv, group_spec
from maestro.recipes import list_recipes, load_recipe, train_recipe
from maestro.spec import EnvSpec
from tiny_envs import MatchConfig, MatchEnv

MODELS = ["independent", "commnet", "bicnet", "ms_marl", "ms_marl_gcm"]


# ---------------------------------------------------------------------- a coordination game
@dataclass(frozen=True)
class SignalConfig:
    max_steps: int = 3
    """episode length"""


class SignalEnv(BatchedEnv):
    """Two agents; only agent 0 sees the episode's bit; each step both get 0.5 per agent naming it.

    ``success``: agent 1 names the bit at the step, which needs communication (0.5 without). The
    state is a constant, so the MS-MARL master learns the bit only from agent 0's message.
    """

    def __init__(self, cfg=SignalConfig(), num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        self.spec = EnvSpec("signal", {"agent": group_spec("agent", 2, 3, gspaces.Discrete(2))}, cfg.max_steps, (1,), ("success",))
        self.bit = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.progress_calls = []

    def set_progress(self, fraction):
        self.progress_calls.append(fraction)
        return fraction

    def _reset_copies(self, mask):
        self.bit = torch.where(mask, torch.randint(0, 2, self.bit.shape, generator=self.rng, device=self.device), self.bit)

    def _step_world(self, actions):
        ok = actions["agent"] == self.bit[:, None]
        r = 0.5 * ok.float().sum(1, keepdim=True).expand(-1, 2).contiguous()
        return {"agent": r}, torch.zeros_like(self.bit, dtype=torch.bool), {"success": ok[:, 1].float()}

    def _observe(self):
        obs = torch.zeros(self.num_envs, 2, 3, device=self.device)
        obs[:, :, 0] = 1.0
        obs[:, 0, 1:] = torch.nn.functional.one_hot(self.bit, 2).float()
        return {"agent": obs}

    def _global_state(self):
        return torch.ones(self.num_envs, 1, device=self.device)

    def _get_sim_state(self):
        return {"bit": self.bit}

    def _set_sim_state(self, s):
        self.bit = s["bit"]

    def render(self):
        return np.zeros((8, 8, 3), dtype=np.uint8)


def train(model, env_fn, iters, B=32, cfg=Config(lr=0.01, hidden_size=16), seed=0, directory=None, hooks=(), resume=False, **run_kw):
    env = env_fn(B, seed)
    rc = RunConfig(env_steps=B * env.spec.max_steps * iters, num_envs=B, progress=False, **{"eval_episodes": 200, **run_kw})
    with Run(rc, directory, seed=seed, make_env=env_fn, hooks=hooks, resume=resume) as run:
        policy = train_reinforce(cfg, env, run, model)
    return policy, run, env


def signal(n, s):
    return SignalEnv(SignalConfig(), n, s)


# ---------------------------------------------------------------------- returns and loss
def test_returns_by_hand():
    # one copy, two agents, T = 4. Agent 0 stays; agent 1 leaves after step 1 (cut), a new agent
    # takes its slot at step 2. The episode ends at step 2 (step 3 is invalid, reward 0).
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [0.0, 0.0]]).view(4, 1, 2)
    cut = torch.tensor([[0, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.bool).view(4, 1, 2)
    v = batch_returns(r, cut, gamma=1.0)
    assert v.view(4, 2).tolist() == [[9.0, 6.0], [8.0, 4.0], [5.0, 6.0], [0.0, 0.0]]
    v = batch_returns(r, cut, gamma=0.5)
    assert v.view(4, 2).tolist() == [[1 + 0.5 * 3 + 0.25 * 5, 2 + 0.5 * 4], [3 + 0.5 * 5, 4.0], [5.0, 6.0], [0.0, 0.0]]


def test_team_return_mix_by_hand():
    # the case above; the episode ends at step 2. Team reward per step = mean over the 2 slots:
    # 1.5, 3.5, 5.5 -> team returns 10.5, 9.0, 5.5 (slot 1's new agent's rewards count for everyone).
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [0.0, 0.0]]).view(4, 1, 2)
    cut = torch.tensor([[0, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.bool).view(4, 1, 2)
    done = torch.tensor([0, 0, 1, 0], dtype=torch.bool).view(4, 1)
    assert torch.equal(mixed_returns(r, cut, done, 1.0, 0.0), batch_returns(r, cut, 1.0))
    team = mixed_returns(r, cut, done, 1.0, 1.0)
    assert team.view(4, 2).tolist() == [[10.5, 10.5], [9.0, 9.0], [5.5, 5.5], [0.0, 0.0]]
    half = mixed_returns(r, cut, done, 1.0, 0.5)
    assert half.view(4, 2).tolist() == [[9.75, 8.25], [8.5, 6.5], [5.25, 5.75], [0.0, 0.0]]
    with pytest.raises(ValueError, match="team_return"):
        Config(team_return=1.5)


def test_loss_ignores_dead_agents_and_invalid_steps():
    g = torch.Generator().manual_seed(0)
    shape = (4, 3, 2)
    logp, ent, value, ret = (torch.randn(shape, generator=g) for _ in range(4))
    w = (torch.rand(shape, generator=g) > 0.4).float()
    cfg = Config(entropy_coef=0.01, normalize_advantages=True)
    base, _ = reinforce_loss(logp, ent, value, ret, w, torch.tensor(12.0), cfg)
    noise = torch.randn(shape, generator=g) * 100 * (1 - w)
    again, _ = reinforce_loss(logp + noise, ent + noise, value + noise, ret - noise, w, torch.tensor(12.0), cfg)
    torch.testing.assert_close(base, again)


def test_combat_batch_masks_and_credits_the_team_terminal_reward():
    env = maestro.make_env("combat", num_envs=16, seed=0, max_steps=12)
    policy = Policy("commnet", group_layout(env.spec), 675, {"hidden_size": 8, "cell": "lstm", "comm_steps": 1, "communicate": True})
    batch, stats = run_batch(env, policy, make_generator(0))
    valid, done, alive = batch["valid"], batch["done"], batch["alive"]
    assert bool((done.sum(0) == 1).all())  # every copy's first episode ends exactly once
    assert not bool((alive & ~valid[..., None]).any())  # nothing counts after a copy's first episode
    assert float(batch["reward"][~valid].abs().sum()) == 0.0
    # at the last step, agents that died earlier receive the same (terminal) reward as the others
    t_end = done.float().argmax(0)
    last = batch["reward"][t_end, torch.arange(16)]  # (B, N)
    assert torch.allclose(last, last[:, :1].expand_as(last))
    assert not bool(batch["cut"][:-1][batch["left"][:-1] & ~done[:-1, :, None]].any())  # no cut at a death: the terminal reward flows back
    assert stats["train/episodes"] == 16


def test_traffic_returns_are_cut_where_a_car_leaves():
    env = maestro.make_env("traffic_junction", num_envs=4, seed=0, difficulty="easy")
    policy = Policy("independent", group_layout(env.spec), 49, {"hidden_size": 8, "cell": "rnn", "comm_steps": 1, "communicate": False})
    batch, _ = run_batch(env, policy, make_generator(0))
    assert bool(batch["left"].any()) and bool((batch["cut"] == (batch["left"] | batch["done"][..., None])).all())


def test_traffic_returns_are_cut_where_a_slot_takes_a_new_car_in_the_same_step():
    # one slot, a car due every step: under IC3Net's slot reuse (the default) the slot is alive
    # throughout, and each car's return ends where it drives off (steps 8 and 15 of the episode)
    env = maestro.make_env("traffic_junction", num_envs=2, seed=0, difficulty="easy", n_cars=1)
    env.reset()
    s = env.get_state()
    s["add_rate"][:] = 1.0
    env.set_state(s)
    policy = Policy("independent", group_layout(env.spec), 49, {"hidden_size": 8, "cell": "rnn", "comm_steps": 1, "communicate": False})
    policy.sample = lambda params, generator: torch.zeros(params.shape[:-1], dtype=torch.long)  # always gas
    batch, _ = run_batch(env, policy, make_generator(0))
    assert bool(batch["alive"][1:].all())
    assert batch["left"][:, :, 0].nonzero()[:, 0].tolist() == [7, 7, 14, 14, 19, 19]  # 19: the auto-reset


# ---------------------------------------------------------------------- learning
@pytest.mark.parametrize("model", MODELS)
def test_learns_the_signalling_game(model):
    _, run, _ = train(model, signal, iters=60)
    success = run.last_eval["eval/success"]
    if model == "independent":
        assert 0.35 < success < 0.65, run.last_eval  # agent 1 cannot know the bit without communication
    else:
        assert success >= 0.9, run.last_eval


def test_learns_continuous_actions_with_annealed_sigma():
    # reward -|a - target| per step; random actions in [0, 1] get about -1.9 per episode
    cfg = Config(lr=0.01, hidden_size=16, sigma=0.3, sigma_final=0.05, optimizer="adam", normalize_advantages=True)
    mc = MatchConfig(continuous=True)
    _, run, _ = train("ms_marl", lambda n, s: MatchEnv(mc, n, s), iters=40, cfg=cfg, eval_episodes=64, eval_deterministic=True)
    assert run.last_eval["eval/episode_return"] >= -0.4, run.last_eval


@pytest.mark.parametrize("model", ["bicnet", "ms_marl_gcm"])
def test_action_masks_and_dead_agents(model):
    # MatchEnv(masked=True) raises if a masked action is ever taken; its last agent is never alive
    mc = MatchConfig(masked=True, dead_agent=True, n_agents=3)
    policy, run, _ = train(model, lambda n, s: MatchEnv(mc, n, s), iters=30, eval_episodes=64)
    assert run.last_eval["eval/episode_return"] >= 0.8 * 5 * 2 / 3, run.last_eval
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_curriculum_hook_follows_training_progress():
    _, run, env = train("commnet", signal, iters=4, eval_episodes=0)
    assert env.progress_calls == [0.0, 0.25, 0.5, 0.75]
    _, _, env = train("commnet", signal, iters=2, cfg=Config(curriculum=False), eval_episodes=0)
    assert env.progress_calls == []


# ---------------------------------------------------------------------- determinism and resume
def test_learning_rate_follows_the_linear_schedule(tmp_path):
    cfg = Config(lr=0.01, hidden_size=16, lr_end_factor=0.0)
    train("commnet", signal, iters=4, cfg=cfg, directory=tmp_path, eval_episodes=0)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/lr"] for r in rows] == pytest.approx([0.01, 0.0075, 0.005, 0.0025])
    with pytest.raises(ValueError, match="lr_end_factor"):
        Config(lr_end_factor=1.5)


def test_resume_is_bitwise_equal_to_uninterrupted(tmp_path):
    cfg = Config(lr=0.01, hidden_size=16, lr_end_factor=0.2)  # the annealed rate must resume too
    full = train("ms_marl_gcm", signal, iters=5, cfg=cfg, directory=tmp_path / "a", eval_episodes=0)[0].state_dict()

    def stop_at_2(run):
        if run.iteration == 2:
            run.request_stop()

    train("ms_marl_gcm", signal, iters=5, cfg=cfg, directory=tmp_path / "b", eval_episodes=0, hooks=(stop_at_2,))
    torch.manual_seed(999)
    resumed = train("ms_marl_gcm", signal, iters=5, cfg=cfg, directory=tmp_path / "b", eval_episodes=0, resume=True)[0].state_dict()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    _, payload, _ = ckpt.latest_valid(tmp_path / "b" / "checkpoints")
    assert payload["run"]["iteration"] == 5


# ---------------------------------------------------------------------- recipes and Figure 6b
def test_ms_marl_recipes_validate_and_name_their_paper_metric():
    names = [n for n in list_recipes() if n.startswith("ms_marl/")]
    assert len(names) >= 11, names
    for n in names:
        r = load_recipe(n)
        assert r.paper is not None and r.paper.metric in ("eval/success", "eval/win"), n
        # combat: the paper's 144 episodes per batch; traffic junction: 64 (the paper's 16 x 4, said in
        # the recipes); unit combat: §4.2's batches of 4 battles; GMEZO (its own learner): 8 directions u per update
        batch = 8 if r.algo == "gmezo" else {"traffic_junction": 64, "combat": 144, "unit_combat": 4}[r.env]
        assert r.run.num_envs == batch, n


def test_recipe_trains_and_action_components_plot(tmp_path):
    recipe = load_recipe("ms_marl/combat_ms_marl", ["run.env_steps=1", "run.num_envs=2", "run.eval_episodes=2", "algo_config.hidden_size=8"])
    result = train_recipe(recipe, tmp_path / "runs", progress=False)
    path = plot_action_components(result.dir, out=tmp_path / "fig6b.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="MS-MARL policies only"):
        plot_action_components(train("commnet", signal, iters=1, eval_episodes=0)[0], signal(1, 0), tmp_path / "x.png")


def test_tanh_bounded_mean_stays_in_the_box_and_survives_save_load(tmp_path):
    """``mean_bound="tanh"``: the Gaussian means of eq. (4) lie in (-1, 1) however large the net's
    output; the choice is part of the saved policy (old states without it load as ``none``)."""
    from maestro.algos.reinforce import model_arch

    env = maestro.make_env("unit_combat", num_envs=2, seed=0)
    obs = env.reset()
    arch = model_arch("ms_marl", Config(hidden_size=8))
    sdim = int(np.prod(env.spec.state_shape))
    p = Policy("ms_marl", group_layout(env.spec), sdim, arch, mean_bound="tanh")
    with torch.no_grad():
        for prm in p.parameters():
            prm.mul_(50.0)  # a net whose raw outputs are far outside [-1, 1]
    alive = env.alive()["agent"]
    raw = Policy("ms_marl", group_layout(env.spec), sdim, arch)
    raw.load_state_dict(p.state_dict())
    h0 = p.net.init_hidden(2, torch.device("cpu"))
    out_tanh = p.step(obs["agent"], env.state(), alive, h0).params
    out_raw = raw.step(obs["agent"], env.state(), alive, h0).params
    assert out_raw.abs().max() > 1.5 and out_tanh.abs().max() <= 1.0  # (tanh of 50 rounds to 1 in float32)
    assert torch.allclose(out_tanh, torch.tanh(out_raw))
    path = p.save(tmp_path / "p.pt")
    assert Policy.load(path).mean_bound == "tanh"
    state = raw.policy_state()
    assert "mean_bound" not in state and Policy.from_state(state).mean_bound == "none"
