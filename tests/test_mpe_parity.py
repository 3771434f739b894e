"""Parity of maestro's particle scenarios with MPE2 1.1.1 (the reference implementation).

For each case: B MPE2 ``parallel_env`` instances are reset with B different seeds, their initial
worlds (agent positions and velocities, landmark/obstacle positions, read from
``env.unwrapped.world``) are copied into the B copies of one maestro env with ``set_state``, and
both are fed the same actions for whole episodes. Observations, rewards, global states and
terminations/truncations must agree to 1e-5 at every step (maestro computes in float32, MPE2 in
float64). This also tests batching: every copy follows its own MPE2 episode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mpe2")
from mpe2 import simple_spread_v3, simple_tag_v3  # noqa: E402

from maestro.envs.particle.common import HEURISTICS  # noqa: E402
from maestro.registry import make_env  # noqa: E402

ATOL = 1e-5
# Sustained contacts (predators pressed against a prey, step after step) amplify float32 rounding
# (a contact turns a position gap d into a velocity gap of up to 10 d per step): with scripted
# chasing the float32/float64 gap exceeds 1e-5 within an episode, while random actions stay
# below it. Contact-heavy runs are therefore compared step by step from MPE2's own state
# (``resync=True``): each step's semantics to 1e-5 without the chaotic accumulation.


def _world_arrays(mpe_env) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    world = mpe_env.unwrapped.world
    agent_pos = np.stack([a.state.p_pos for a in world.agents])
    agent_vel = np.stack([a.state.p_vel for a in world.agents])
    lm_pos = np.stack([lm.state.p_pos for lm in world.landmarks]) if world.landmarks else np.zeros((0, 2))
    return agent_pos, agent_vel, lm_pos


def _load_worlds(env, mpe_envs, landmark_key: str, copies=None, reset_t: bool = True) -> None:
    """Copy each MPE2 env's world into the matching copy of the maestro env."""
    s = env.get_state()
    for b, m in enumerate(mpe_envs):
        if copies is not None and not copies[b]:
            continue
        ap, av, lp = _world_arrays(m)
        s["agent_pos"][b] = torch.as_tensor(ap, dtype=torch.float32)
        s["agent_vel"][b] = torch.as_tensor(av, dtype=torch.float32)
        s[landmark_key][b] = torch.as_tensor(lp, dtype=torch.float32)
    if reset_t:
        s["t"].zero_()
    env.set_state(s)


def _stack(d: dict, names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(d[n], dtype=np.float64) for n in names])


def _run_parity(env, mpe_envs, groups: dict[str, list[str]], seeds: list[int], landmark_key: str, policy=None, rng_seed=0, resync: bool = False) -> tuple[int, int]:
    """Step maestro and the MPE2 envs side by side until every MPE2 episode is over.

    ``groups`` maps a maestro group to its MPE2 agent names (in order). Returns the number of
    compared steps and the number of copies that terminated (rather than being truncated).
    ``policy(env) -> actions`` (default: uniform random actions). ``resync``: copy MPE2's world
    into maestro before every step (one-step parity, see ``ATOL``).
    """
    B = env.num_envs
    mpe_obs = [m.reset(seed=s)[0] for m, s in zip(mpe_envs, seeds)]
    env.reset(seed=0)
    _load_worlds(env, mpe_envs, landmark_key)
    obs = env.observe()
    for b in range(B):
        for g, names in groups.items():
            np.testing.assert_allclose(obs[g][b].numpy(), _stack(mpe_obs[b], names), atol=ATOL, err_msg=f"initial obs[{g}] copy {b}")
    rng = np.random.default_rng(rng_seed)
    live = [True] * B
    steps = terminations = 0
    while any(live):
        if resync and steps:
            _load_worlds(env, mpe_envs, landmark_key, copies=live, reset_t=False)
        if policy is not None:
            acts = policy(env)
        else:
            acts = {}
            for g, gs in env.spec.groups.items():
                if gs.discrete:
                    acts[g] = torch.as_tensor(rng.integers(0, gs.action_dim, (B, gs.n_agents)), dtype=torch.long)
                else:
                    acts[g] = torch.as_tensor(rng.uniform(0.0, 1.0, (B, gs.n_agents, gs.action_dim)).astype(np.float32))
        out = env.step(acts)
        for b in range(B):
            if not live[b]:
                continue
            m = mpe_envs[b]
            mpe_act = {}
            for g, names in groups.items():
                a = acts[g][b].numpy()
                for i, n in enumerate(names):
                    mpe_act[n] = int(a[i]) if a.ndim == 1 else a[i]
            o, r, term, trunc, _ = m.step(mpe_act)
            state_ref = m.unwrapped.state()
            where = f"copy {b} (seed {seeds[b]}) step {steps}"
            for g, names in groups.items():
                np.testing.assert_allclose(out.final_obs[g][b].numpy(), _stack(o, names), atol=ATOL, err_msg=f"obs[{g}] {where}")
                np.testing.assert_allclose(out.reward[g][b].numpy(), np.array([r[n] for n in names]), atol=ATOL, err_msg=f"reward[{g}] {where}")
                mpe_term = {bool(term[n]) for n in names}
                mpe_trunc = {bool(trunc[n]) for n in names}
                assert len(mpe_term) == 1 and len(mpe_trunc) == 1
                done_ref = mpe_term.pop() or mpe_trunc.pop()
                assert bool(out.done[b]) == done_ref, f"done differs at {where}"
                if done_ref and not bool(trunc[names[0]]):
                    assert bool(out.terminated[b]), f"MPE2 terminated but maestro did not at {where}"
                if bool(trunc[names[0]]) and steps + 1 < env.spec.max_steps:
                    raise AssertionError(f"unexpected MPE2 truncation at {where}")
            np.testing.assert_allclose(out.final_state[b].numpy(), state_ref, atol=ATOL, err_msg=f"state {where}")
            if bool(out.done[b]):
                live[b] = False
                terminations += int(bool(out.terminated[b]))
        steps += 1
    return steps, terminations


SPREAD_CASES = [(n, cont) for n in (2, 3, 5) for cont in (False, True)]


@pytest.mark.parametrize("n,continuous", SPREAD_CASES)
def test_simple_spread_matches_mpe2(n, continuous):
    seeds = [11, 12, 13]
    kw = dict(N=n, local_ratio=0.5, max_cycles=25, continuous_actions=continuous)
    mpe_envs = [simple_spread_v3.parallel_env(**kw) for _ in seeds]
    env = make_env("simple_spread", num_envs=len(seeds), n_agents=n, local_ratio=0.5, max_cycles=25, continuous_actions=continuous)
    names = [f"agent_{i}" for i in range(n)]
    steps, _ = _run_parity(env, mpe_envs, {"agent": names}, seeds, "landmark_pos", rng_seed=n)
    assert steps == 25


@pytest.mark.parametrize("continuous", [False, True])
def test_simple_spread_local_ratio_and_success_termination(continuous):
    """Another local_ratio, and terminate_on_success reached by the heuristic (episodes end early)."""
    seeds = [3, 4, 5, 6]
    mpe_envs = [
        simple_spread_v3.parallel_env(N=2, local_ratio=0.2, max_cycles=40, continuous_actions=continuous, terminate_on_success=True)
        for _ in seeds
    ]
    env = make_env("simple_spread", num_envs=len(seeds), n_agents=2, local_ratio=0.2, max_cycles=40, continuous_actions=continuous, terminate_on_success=True)
    _, terminations = _run_parity(env, mpe_envs, {"agent": ["agent_0", "agent_1"]}, seeds, "landmark_pos", policy=HEURISTICS["simple_spread"])
    assert terminations >= 1, "no copy reached success: terminate_on_success was not exercised"


TAG_CASES = [(g, a, o, cont) for (g, a, o) in ((1, 3, 2), (2, 4, 1)) for cont in (False, True)]


@pytest.mark.parametrize("good,adv,obstacles,continuous", TAG_CASES)
def test_simple_tag_matches_mpe2(good, adv, obstacles, continuous):
    seeds = [21, 22, 23]
    kw = dict(num_good=good, num_adversaries=adv, num_obstacles=obstacles, max_cycles=25, continuous_actions=continuous)
    mpe_envs = [simple_tag_v3.parallel_env(**kw) for _ in seeds]
    env = make_env("simple_tag", num_envs=len(seeds), **kw)
    groups = {"adversary": [f"adversary_{i}" for i in range(adv)], "prey": [f"agent_{i}" for i in range(good)]}
    steps, _ = _run_parity(env, mpe_envs, groups, seeds, "obstacle_pos", rng_seed=good + adv)
    assert steps == 25


@pytest.mark.parametrize("continuous", [False, True])
def test_simple_tag_heuristic_episodes_match_mpe2(continuous):
    """Scripted chasing makes touches (the +10/-10 rewards) frequent, so they are compared too
    (step by step from MPE2's state: sustained contacts amplify float32 rounding, see ``ATOL``)."""
    seeds = [31, 32, 33, 34]
    kw = dict(num_good=1, num_adversaries=3, num_obstacles=2, max_cycles=25, continuous_actions=continuous)
    mpe_envs = [simple_tag_v3.parallel_env(**kw) for _ in seeds]
    env = make_env("simple_tag", num_envs=len(seeds), **kw)
    groups = {"adversary": [f"adversary_{i}" for i in range(3)], "prey": ["agent_0"]}
    touches = []

    def policy(e):
        acts = HEURISTICS["simple_tag"](e)
        acts["prey"] = torch.zeros_like(acts["prey"])  # a prey that does not flee gets caught
        return acts

    orig_step = env.step

    def step(a):
        out = orig_step(a)
        touches.append(out.info["touches"].sum())
        return out

    env.step = step
    _run_parity(env, mpe_envs, groups, seeds, "obstacle_pos", policy=policy, resync=True)
    assert sum(touches) > 0, "the heuristic predators never touched the prey: the collision rewards were not exercised"
