"""Multi-task MARL (papers/003): entity tokens, the relation networks, the MI reward and the
auto-encoder against hand-computed cases, the learner on a tiny two-task problem, determinism and
resume across tasks (check_algo), and the CLI's zero-shot evaluation and fine-tuning."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import ClassVar

import pytest
import torch

import maestro
from maestro.algos import multitask as mt
from maestro.algos.check import check_algo
from maestro.cli import main
from maestro.config import build_config
from maestro.core.checkpoint import newest_checkpoint
from maestro.core.evaluate import evaluate
from maestro.core.run import Run, RunConfig
from maestro.nn.relation import RelationalHead, RelationNet, TaskDecoder, TaskEncoder, mi_reward, reconstruction_loss
from maestro.registry import Smoke, algo_entry

TINY = {"hidden": 16, "value_dim": 8, "heads": 2, "key_dim": 4, "task_hidden": 8, "n_skills": 3, "mi_samples": 3}


# ---------------------------------------------------------------------- entity tokens
def _stepped(name, steps=4, **kw):
    env = maestro.make_env(name, num_envs=3, seed=2, **kw)
    env.reset(seed=2)
    gen = torch.Generator().manual_seed(0)
    out = None
    for _ in range(steps):
        out = env.step({g: torch.randint(0, 5, (3, gs.n_agents), generator=gen) for g, gs in env.spec.groups.items()})
    return env, out


def test_spread_tokens_are_the_flat_observation_by_entity():
    env, out = _stepped("simple_spread", n_agents=4)
    ent = env.entity_obs(out.obs)["agent"]
    N = 4
    assert ent.tokens.shape == (3, N, 2 * N, env.spec.entity_token_dim) and ent.mask.all()
    p, v, lm = env.agent_pos, env.agent_vel, env.landmark_pos
    for i in range(N):
        tok = ent.tokens[:, i]
        assert torch.allclose(tok[:, 0, :4], torch.cat([p[:, i], v[:, i]], -1), atol=1e-6)  # self: (p_i, v_i)
        others = [k for k in range(N) if k != i]
        assert torch.allclose(tok[:, 1:N, :2], p[:, others] - p[:, i : i + 1], atol=1e-6)
        assert torch.allclose(tok[:, N:, :2], lm - p[:, i : i + 1], atol=1e-6)
        assert (tok[:, 1:, 2:5] == 0).all() and (tok[:, 0, 4] == 1).all()
        kinds = tok[..., 5:].argmax(-1)
        assert (kinds[:, :N] == 0).all() and (kinds[:, N:] == 1).all()
    flat = out.obs["agent"]  # every number of the tokens is a number of the flat vector (or 0 / 1)
    assert torch.equal(ent.tokens[..., 1:N, :2].reshape(3, N, -1), flat[..., 4 + 2 * N : 4 + 2 * N + 2 * (N - 1)])


def test_tag_tokens_roles_velocities_and_field_of_view():
    env, out = _stepped("simple_tag", num_adversaries=2, num_good=2, num_obstacles=1, view_radius=0.6)
    ent = env.entity_obs(out.final_obs)
    p, v, o = env.agent_pos, env.agent_vel, env.obstacle_pos
    for g, first in (("adversary", 0), ("prey", 2)):
        for j in range(2):
            i = first + j
            tok, mask = ent[g].tokens[:, j], ent[g].mask[:, j]
            others = [k for k in range(4) if k != i]
            assert torch.allclose(tok[:, 1:4, :2], p[:, others] - p[:, i : i + 1], atol=1e-6)
            prey = [m for m, k in enumerate(others) if k >= 2]
            adv = [m for m, k in enumerate(others) if k < 2]
            assert torch.allclose(tok[:, [1 + m for m in prey], 2:4], v[:, [others[m] for m in prey]], atol=1e-6)  # prey velocities seen
            assert (tok[:, [1 + m for m in adv], 2:4] == 0).all()  # predators' are not in the observation
            assert torch.allclose(tok[:, 4, :2], o[:, 0] - p[:, i], atol=1e-6)
            assert (tok[:, 0, 5:].argmax(-1) == (0 if g == "adversary" else 1)).all()
            dist = tok[..., :2].norm(dim=-1)
            assert torch.equal(mask[:, 1:], dist[:, 1:] <= 0.6) and mask[:, 0].all()


def test_task_description_and_world_size():
    env = maestro.make_env("simple_spread", num_envs=64, seed=0, n_agents=3, world_size=2.0, view_radius=0.5)
    assert env.task_description() == {"agents": 3.0, "landmarks": 3.0, "world_size": 2.0, "view_radius": 0.5}
    env.reset()
    assert env.agent_pos.abs().max() > 1.2 and env.agent_pos.abs().max() <= 2.0
    with pytest.raises(ValueError, match="world_size"):
        maestro.make_env("simple_spread", world_size=0.0)
    with pytest.raises(NotImplementedError, match="entity tokens"):
        maestro.make_env("traffic_junction").entity_obs()


# ---------------------------------------------------------------------- networks
def _tokens(M, E, F=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randn(M, E, F, generator=g)
    tok[:, 0, 4], tok[:, 1:, 4] = 1.0, 0.0
    return tok


@pytest.mark.parametrize("context_layers", [0, 1])
@pytest.mark.parametrize("E", [3, 11])
def test_relation_net_and_heads_are_equivariant_over_other_entities_for_any_number(E, context_layers):
    torch.manual_seed(0)
    rel_net = RelationNet(7, 3, hidden=16, heads=2, key_dim=4)
    head = RelationalHead(7, 2, 5, hidden=16, value_dim=8, context_layers=context_layers)
    tok, mask = _tokens(6, E), torch.ones(6, E, dtype=torch.bool)
    mask[:, -1] = False
    skill = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    k = rel_net(tok, mask, skill)
    assert k.shape == (6, 2, E) and torch.allclose(k.sum(-1), torch.ones(6, 2)) and (k[..., -1] == 0).all()
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(E - 1)])  # the observer stays first
    k_p = rel_net(tok[:, perm], mask[:, perm], skill)
    assert torch.allclose(k_p, k[..., perm], atol=1e-6)  # relations permute with the entities
    out, out_p = head(tok, k, mask), head(tok[:, perm], k_p, mask[:, perm])
    assert out.shape == (6, 5) and torch.allclose(out, out_p, atol=1e-5)  # logits / Q do not change
    batch_perm = torch.randperm(6)  # and agents are treated alike: permuting observers permutes outputs
    assert torch.allclose(head(tok[batch_perm], k[batch_perm], mask[batch_perm]), out[batch_perm], atol=1e-6)
    hidden_entity = tok.clone()
    hidden_entity[:, -1] += 5.0  # what an observer does not see changes nothing (the self-attention is masked too)
    assert torch.allclose(head(hidden_entity, k, mask), out, atol=1e-6)
    if context_layers:
        with pytest.raises(ValueError, match="mask"):
            head(tok, k)


def test_network_sizes_do_not_depend_on_the_number_of_agents():
    a = mt.Policy(_arch("simple_spread", n_agents=2))
    b = mt.Policy(_arch("simple_spread", n_agents=8))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def _arch(name, tasks=(), **env_kw):
    env = maestro.make_env(name, num_envs=2, seed=0, **env_kw)
    cfg = build_config(mt.Config, {**TINY, "tasks": list(tasks)})
    envs, _ = mt.build_tasks(cfg, env)
    return mt.policy_arch(cfg, env, envs)


def test_one_policy_acts_on_any_team_size_after_bind():
    torch.manual_seed(0)
    policy = mt.Policy(_arch("simple_tag"))
    for A, G in ((1, 1), (6, 2), (8, 3)):
        env = maestro.make_env("simple_tag", num_envs=3, seed=1, num_adversaries=A, num_good=G)
        acts, hidden = policy.bind(env).act(env.reset(), generator=torch.Generator().manual_seed(0))
        assert acts["adversary"].shape == (3, A) and acts["prey"].shape == (3, G) and hidden["skill"].shape == (3, A + G)
        env.step(acts)
    with pytest.raises(ValueError, match="entity_kinds"):
        policy.bind(maestro.make_env("simple_spread"))


# ---------------------------------------------------------------------- MI reward and auto-encoder
def test_mi_reward_hand_computed():
    # pi(a|s,k) = 0.5; the N = 4 sampled relations give 0.5, 0.25, 0.125, 0.125: R = log(4 * 0.5 / 1.0) = log 2
    own = torch.log(torch.tensor([0.5]))
    samples = torch.log(torch.tensor([[0.5], [0.25], [0.125], [0.125]]))
    assert torch.allclose(mi_reward(own, samples), torch.tensor([math.log(2.0)]))
    # the relations of every sample equal the agent's own: nothing is learnt about a from k, R = 0
    assert torch.allclose(mi_reward(own, own.expand(3, 1)), torch.zeros(1), atol=1e-7)
    with pytest.raises(ValueError, match="samples"):
        mi_reward(own, torch.zeros(3, 2))


def _learner(tasks=({"n_agents": 2}, {"n_agents": 3}), **over):
    cfg = build_config(mt.Config, {**TINY, "tasks": list(tasks), "batch_size": 16, "warmup_steps": 1, "update_every": 8, "round_updates": 1, **over})
    env = maestro.make_env("simple_spread", num_envs=8, seed=0, n_agents=3)
    torch.manual_seed(0)
    learner = mt.Learner(cfg, env, 0, 1000)
    for _ in range(4):
        learner.collect()
    return learner


def test_mi_loss_reaches_phi_and_psi_not_theta():
    learner = _learner()
    with torch.no_grad():  # a target policy that reacts to its relations (the fresh one's logits are ~0)
        for p in learner.nets.target_actors.parameters():
            p.mul_(20.0)
    i = 1
    d = mt.sample_batch(learner.envs[i], learner.bufs[i], 16, learner.generator)
    loss = mt.mi_loss(learner.cfg, learner.policy, learner.nets, learner.slices[i], d, learner.descs[i], learner.generator)
    loss.backward()

    def norm(module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return sum(float(g.abs().sum()) for g in grads), len(grads)

    assert norm(learner.policy.relation)[0] > 0, "phi gets no gradient from the MI reward"
    assert norm(learner.policy.encoder)[0] > 0, "psi gets no gradient from the MI reward"
    assert norm(learner.policy.actors) == (0, 0), "theta must not learn from the MI reward"
    assert norm(learner.nets.target_actors) == (0, 0) and norm(learner.nets.critic) == (0, 0)


def test_mi_loss_is_zero_when_skills_change_nothing():
    learner = _learner()
    with torch.no_grad():
        learner.policy.relation.query.weight[:, -learner.policy.skill_dim :] = 0.0  # the skill's columns
        for p in learner.nets.target_actors.parameters():
            p.mul_(20.0)
    d = mt.sample_batch(learner.envs[0], learner.bufs[0], 16, learner.generator)
    loss = mt.mi_loss(learner.cfg, learner.policy, learner.nets, learner.slices[0], d, learner.descs[0], learner.generator)
    assert abs(float(loss.detach())) < 1e-5


def test_autoencoder_reconstructs_task_descriptions():
    torch.manual_seed(0)
    descs = torch.tensor([[n, n, 1.0, 2.83] for n in (2.0, 3.0, 4.0, 5.0, 6.0)])
    enc, dec = TaskEncoder(descs.abs().amax(0), 4, hidden=16), TaskDecoder(4, 4, hidden=16)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)

    def loss():
        return reconstruction_loss(enc.normalise(descs), dec(torch.softmax(enc(descs), -1)))

    before = float(loss().detach())
    for _ in range(400):
        opt.zero_grad()
        loss().backward()
        opt.step()
    after = float(loss().detach())
    assert after < 0.03 < before, (before, after)  # normalised units: agent counts within 0.03 * 6
    probs = torch.softmax(enc(descs), -1)
    assert (probs[0] - probs[-1]).abs().sum() > 0.1  # different tasks, different skill distributions


# ---------------------------------------------------------------------- learning and the contract
class _Random:
    def act(self, obs, state=None, hidden=None, *, generator=None, **kw):
        return {g: torch.randint(0, 5, o.shape[:2], generator=generator) for g, o in obs.items()}, None


class _Still:
    def act(self, obs, state=None, hidden=None, **kw):
        return {g: torch.zeros(o.shape[:2], dtype=torch.long) for g, o in obs.items()}, None


@pytest.mark.slow  # about 35-50 s on a shared 2-core machine: the learner needs ~2,000 updates to leave "stand still"
def test_learner_beats_random_and_standing_still_on_two_spread_tasks():
    cfg = build_config(mt.Config, {**TINY, "tasks": [{"n_agents": 1}, {"n_agents": 2}], "batch_size": 64, "update_every": 50, "round_updates": 10, "warmup_steps": 500, "lr": 2e-3, "critic_lr": 2e-3})
    env = maestro.make_env("simple_spread", num_envs=16, seed=0, n_agents=2)
    with Run(RunConfig(env_steps=12_000, num_envs=16, eval_episodes=0, progress=False, tensorboard=False), None, seed=0) as run:
        policy = mt.train_multitask(cfg, env, run)
    for n in (1, 2):
        e = maestro.make_env("simple_spread", num_envs=128, seed=5, n_agents=n)
        ret = {name: float(evaluate(p, e, seed=5, generator=torch.Generator().manual_seed(5))["episode_return"].mean()) for name, p in (("trained", policy), ("random", _Random()), ("still", _Still()))}
        assert ret["trained"] > ret["random"] + 1.0 and ret["trained"] > ret["still"] + 0.3, (n, ret)


class _TwoTaskConfig(mt.Config):
    SMOKE: ClassVar[Smoke] = Smoke(config={**mt.Config.SMOKE.config, "tasks": ({"n_agents": 2}, {"n_agents": 3})})


def test_check_algo_across_two_tasks(tmp_path):
    entry = replace(algo_entry("multitask"), name="multitask_two_tasks", config=_TwoTaskConfig)
    report = check_algo(entry, lambda n, s: maestro.make_env("simple_spread", num_envs=n, seed=s, n_agents=4), tmp_path)
    assert any(k.startswith("relation.") for k in report.changed_parameters) and any(k.startswith("actors.") for k in report.changed_parameters)


def test_bad_tasks_are_named():
    env = maestro.make_env("simple_spread", num_envs=2)
    with pytest.raises(ValueError, match="n_agent"):
        mt.build_tasks(build_config(mt.Config, {"tasks": [{"n_agent": 3}]}), env)
    with pytest.raises(ValueError, match="no entity tokens|entity tokens"):
        mt.Learner(build_config(mt.Config, TINY), maestro.make_env("traffic_junction", num_envs=2), 0, 100)


def test_cli_zero_shot_eval_on_unseen_sizes_and_fine_tune(tmp_path, capsys):
    base = ["--set", "run.env_steps=400", "--set", "run.num_envs=4", "--set", "run.eval_episodes=4", "--set", "run.checkpoint_every=0", "--out", str(tmp_path)]
    tiny = [f"--set=algo_config.{k}={v}" for k, v in {**TINY, "batch_size": 8, "warmup_steps": 8, "update_every": 8, "round_updates": 1}.items()]
    assert main(["train", "multitask/spread_train345", *base, *tiny, "--no-progress"]) == 0
    run_dir = next(tmp_path.glob("multitask_spread_train345/*"))
    for n in (2, 8):
        assert main(["eval", str(run_dir), "--episodes", "4", "--set", f"env_config.n_agents={n}"]) == 0
        out = json.loads((run_dir / f"eval-env_config.n_agents={n}.json").read_text())
        assert out["env_config"]["n_agents"] == n and math.isfinite(out["summary"]["episode_return"][0])
    assert "with env_config.n_agents=8" in capsys.readouterr().out
    assert main(["train", "multitask/spread_finetune6", *base, *tiny, "--set", f"algo_config.init_from={run_dir}", "--set", "algo_config.warmup_steps=8", "--no-progress"]) == 0
    ft = next(tmp_path.glob("multitask_spread_finetune6/*"))
    src = mt.Policy.load(next((run_dir / "checkpoints").glob("ckpt_*.pt")))
    tuned = mt.Policy.load(next((ft / "checkpoints").glob("ckpt_*.pt")))
    assert torch.equal(src.encoder.scale, tuned.encoder.scale)  # N=6 is read in the source's units
    assert not torch.equal(src.state_dict()["actors.agent.out.net.2.weight"], tuned.state_dict()["actors.agent.out.net.2.weight"])
    bad = ["--set", "algo_config.hidden=8", "--set", f"algo_config.init_from={run_dir}"]
    assert main(["train", "multitask/spread_finetune6", *base, *tiny, *bad, "--no-progress"]) != 0

    # init_optimisers: the source's Adam moments carry over, this config's learning rates stay
    ft_args = [*base, *tiny, "--set", f"algo_config.init_from={run_dir}", "--set", "algo_config.warmup_steps=8", "--set", "algo_config.init_optimisers=true", "--no-progress"]
    assert main(["train", "multitask/spread_finetune6", *ft_args, "--set", "algo_config.lr=3e-4", "--set", "name=ft_opt"]) == 0
    src_state = newest_checkpoint(run_dir)["state"]
    ft_state = newest_checkpoint(next(tmp_path.glob("ft_opt/*")))["state"]
    for k in ("actor", "critic", "relation"):
        src_steps = float(src_state["opts"][k]["state"][0]["step"])
        assert float(ft_state["opts"][k]["state"][0]["step"]) > src_steps > 0, k
    assert ft_state["opts"]["actor"]["param_groups"][0]["lr"] == 3e-4 and ft_state["opts"]["critic"]["param_groups"][0]["lr"] == 1e-3
    capsys.readouterr()
    no_relation_step = ["--set", "algo_config.mi_reward=false", "--set", "algo_config.autoencoder=false"]
    assert main(["train", "multitask/spread_finetune6", *ft_args, *no_relation_step]) != 0
    assert "optimiser states for actor, critic, relation, this run needs actor, critic" in capsys.readouterr().err


def test_actor_delay_trains_the_critic_alone_until_its_env_step():
    learner = _learner(actor_delay_steps=100)  # 64 env steps collected, warm-up 1
    nets = {"critic": learner.nets.critic, "actors": learner.policy.actors, "relation": learner.policy.relation, "encoder": learner.policy.encoder}
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.items()}

    def moved():
        return {k: any(not torch.equal(a, b) for a, b in zip(before[k], m.parameters())) for k, m in nets.items()}

    learner.maybe_update(16)
    assert learner.counters["rounds"] > 0 and moved() == {"critic": True, "actors": False, "relation": False, "encoder": False}
    for _ in range(3):  # past warm-up + delay (101 env steps): everything learns
        learner.collect()
    learner.maybe_update(48)
    assert learner.counters["env_steps"] >= 101 and all(moved().values())
    with pytest.raises(ValueError, match="init_optimisers needs init_from"):
        build_config(mt.Config, {"init_optimisers": True})


def test_the_critic_reads_each_other_agents_action_on_its_token():
    S, A, L, Fd, n = 2, 3, 3, 7, 5
    tokens = torch.randn(S, A, A + L, Fd)
    act = torch.tensor([[0, 1, 2], [4, 3, 0]])
    out = mt.with_actions(tokens, act, n)
    assert out.shape == (S, A, A + L, Fd + n) and torch.equal(out[..., :Fd], tokens)
    for s in range(S):
        for i in range(A):
            others = [j for j in range(A) if j != i]  # the token order of EntityObs: self, the others, landmarks
            expect = torch.zeros(A + L, n)
            for slot, j in enumerate(others, start=1):
                expect[slot, act[s, j]] = 1.0
            assert torch.equal(out[s, i, :, Fd:], expect), (s, i)


@pytest.mark.parametrize("rl_relations", [False, True])
def test_the_rl_losses_reach_phi_only_with_rl_relations(rl_relations):
    learner = _learner(rl_relations=rl_relations)
    i = 1
    d = mt.sample_batch(learner.envs[i], learner.bufs[i], 16, learner.generator)
    critic, policy, _ = mt.td_and_policy_losses(learner.cfg, learner.policy, learner.nets, learner.slices[i], d, learner.generator)
    (critic + policy).backward()
    grads = [p.grad for p in learner.policy.relation.parameters() if p.grad is not None]
    assert bool(grads) == rl_relations and (not grads or sum(float(g.abs().sum()) for g in grads) > 0)
    assert all(p.grad is None for p in learner.policy.encoder.parameters())  # psi learns from eqs. (5)-(6) only
    # and a round steps phi only then (the MI and auto-encoder step is off here)
    learner2 = _learner(rl_relations=rl_relations, mi_reward=False, autoencoder=False)
    before = [p.detach().clone() for p in learner2.policy.relation.parameters()]
    learner2._step_policy_critic()
    moved = any(not torch.equal(a, b) for a, b in zip(before, learner2.policy.relation.parameters()))
    assert moved == rl_relations
