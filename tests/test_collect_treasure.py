"""collect_treasure: conformance, parity with MPE2 1.1.1's collect_treasure_v1, MATRPO reward, baseline.

Parity protocol (``test_parity_with_mpe2``): ``B`` MPE2 envs are reset with different seeds and
their initial worlds (agent positions and velocities, holdings, treasure positions, types and
alive flags) are copied into one batched maestro env with ``set_state``. Both are then fed the
same actions (the scripted baseline, with a quarter of the agents' actions replaced by random
ones, so that pickups, deliveries, collisions and respawns all happen) and must agree to 1e-5 on
every step's observations, rewards, truncation/termination, global state and world.

Respawns draw random positions and types, and maestro cannot reproduce numpy's stream. Because
MPE2 draws only when it respawns a treasure, and a treasure respawns exactly when it was dead at
the start of the step, the draws of the coming step are known before it: before every step the
test replays them on a copy of ``world.np_random`` (in MPE2's order: for each dead treasure by
index, ``uniform()``, ``uniform(-0.95, 0.95, 2)``, ``integers(0, n_types)``) and writes them
into maestro's respawn table (``respawn_pos``/``respawn_type`` at the current step). So the
step where a treasure respawns is compared too, and the world comparison after every step
checks that the replayed draws are the ones MPE2 made.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import maestro
from maestro.config import ConfigError
from maestro.envs.api import random_actions
from maestro.envs.check import check_env
from maestro.envs.particle.collect_treasure import heuristic_treasure, obs_dims

ATOL = 1e-5


# ---------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("reward", ["mpe", "matrpo"])
@pytest.mark.parametrize("continuous", [False, True])
def test_check_env(reward, continuous):
    check_env("collect_treasure", num_envs=4, seed=1, reward=reward, continuous_actions=continuous)


def test_check_env_small_world():
    check_env("collect_treasure", num_envs=3, seed=2, num_collectors=2, num_deposits=1, num_treasures=3, max_cycles=7)


def test_spec_shapes_match_mpe2_defaults():
    env = maestro.make_env("collect_treasure", num_envs=2)
    assert env.spec.groups["collector"].obs_shape == (86,)
    assert env.spec.groups["deposit"].obs_shape == (84,)
    assert env.spec.state_shape == (684,)
    assert env.spec.max_steps == 25
    assert set(env.spec.info_keys) >= {"collections", "deposits"}


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(num_collectors=0), "num_collectors"),
        (dict(num_deposits=0), "num_deposits"),
        (dict(num_deposits=7), "num_deposits"),
        (dict(num_treasures=0), "num_treasures"),
        (dict(max_cycles=0), "max_cycles"),
        (dict(num_treasures=True), "num_treasures"),
        (dict(reward="shared"), "reward"),
        (dict(continuous_actions="yes"), "continuous_actions"),
        (dict(num_collector=3), "num_collector"),
    ],
)
def test_bad_config_raises_naming_key(kw, key):
    with pytest.raises(ValueError, match=key):
        maestro.make_env("collect_treasure", num_envs=1, **kw)


def test_bad_config_is_config_error():
    with pytest.raises(ConfigError):
        maestro.make_env("collect_treasure", reward="shared")


def test_set_state_rejects_bad_holding():
    env = maestro.make_env("collect_treasure", num_envs=2)
    env.reset()
    s = env.get_state()
    s["holding"][0, 0] = 5
    with pytest.raises(ValueError, match="holding"):
        env.set_state(s)


# ---------------------------------------------------------------------------- MPE2 parity helpers
def mpe_env(cfg: dict, seed: int):
    """An MPE2 collect_treasure_v1 parallel env reset with ``seed`` (skips if MPE2 is absent)."""
    mpe2_ct = pytest.importorskip("mpe2.collect_treasure_v1")
    kw = {k: v for k, v in cfg.items() if k != "reward"}
    env = mpe2_ct.parallel_env(**kw)
    env.reset(seed=seed)
    return env


def write_worlds(menv, worlds) -> None:
    """Copy MPE2 worlds (one per copy) into the maestro env's state."""
    s = menv.get_state()
    for b, w in enumerate(worlds):
        for i, a in enumerate(w.agents):
            s["pos"][b, i] = torch.as_tensor(a.state.p_pos)
            s["vel"][b, i] = torch.as_tensor(a.state.p_vel)
            if a.collector:
                s["holding"][b, i] = -1 if a.holding is None else a.holding
        for t, lm in enumerate(w.landmarks):
            s["treasure_pos"][b, t] = torch.as_tensor(lm.state.p_pos)
            s["treasure_type"][b, t] = lm.type
            s["treasure_alive"][b, t] = lm.alive
    menv.set_state(s)


def assert_world_equal(menv, worlds, what: str) -> None:
    s = menv.get_state()
    for b, w in enumerate(worlds):
        pos = torch.tensor(np.array([a.state.p_pos for a in w.agents]), dtype=torch.float32)
        vel = torch.tensor(np.array([a.state.p_vel for a in w.agents]), dtype=torch.float32)
        hold = torch.tensor([-1 if a.holding is None else a.holding for a in w.agents if a.collector])
        tpos = torch.tensor(np.array([lm.state.p_pos for lm in w.landmarks]), dtype=torch.float32)
        ttype = torch.tensor([lm.type for lm in w.landmarks])
        alive = torch.tensor([lm.alive for lm in w.landmarks])
        assert torch.allclose(s["pos"][b], pos, atol=ATOL, rtol=0), f"{what}, copy {b}: positions differ"
        assert torch.allclose(s["vel"][b], vel, atol=ATOL, rtol=0), f"{what}, copy {b}: velocities differ"
        assert torch.equal(s["holding"][b], hold), f"{what}, copy {b}: holdings {s['holding'][b].tolist()} vs {hold.tolist()}"
        assert torch.equal(s["treasure_alive"][b], alive), f"{what}, copy {b}: treasure alive flags differ"
        assert torch.equal(s["treasure_type"][b], ttype), f"{what}, copy {b}: treasure types differ"
        assert torch.allclose(s["treasure_pos"][b], tpos, atol=ATOL, rtol=0), f"{what}, copy {b}: treasure positions differ"


def write_predicted_respawns(menv, worlds) -> int:
    """Replay MPE2's respawn draws of the coming step into maestro's table; returns how many."""
    s = menv.get_state()
    n = 0
    for b, w in enumerate(worlds):
        rng = copy.deepcopy(w.np_random)
        k = int(s["t"][b])
        for t, lm in enumerate(w.landmarks):
            if not lm.alive and rng.uniform() <= lm.respawn_prob:
                s["respawn_pos"][b, k, t] = torch.as_tensor(rng.uniform(-0.95, 0.95, w.dim_p))
                s["respawn_type"][b, k, t] = int(rng.integers(0, len(w.treasure_types)))
                n += 1
    if n:
        menv.set_state(s)
    return n


def to_mpe_actions(actions: dict, b: int, n_col: int, continuous: bool) -> dict:
    out = {}
    for g, name in (("collector", "collector_{}"), ("deposit", "deposit_{}")):
        a = actions[g][b]
        for i in range(a.shape[0]):
            out[name.format(i)] = a[i].numpy().astype(np.float32) if continuous else int(a[i])
    return out


def mixed_actions(menv, gen: torch.Generator, p_random: float = 0.25) -> dict:
    """The scripted baseline, with each agent's action replaced by a random one with ``p_random``."""
    heur = heuristic_treasure(menv)
    rnd = random_actions(menv, gen)
    out = {}
    for g in heur:
        mask = torch.rand(heur[g].shape[:2], generator=gen) < p_random
        if heur[g].ndim == 3:
            mask = mask[..., None]
        out[g] = torch.where(mask, rnd[g], heur[g])
    return out


def compare_step(out, menv, mpes, mres, what: str) -> None:
    C = menv.cfg.num_collectors
    for b, (env, (obs, rew, term, trunc)) in enumerate(zip(mpes, mres)):
        for g, n in (("collector", C), ("deposit", menv.cfg.num_deposits)):
            for i in range(n):
                name = f"{g}_{i}"
                mo = torch.as_tensor(obs[name])
                got = out.final_obs[g][b, i]
                assert torch.allclose(got, mo, atol=ATOL, rtol=0), (
                    f"{what}, copy {b}: obs of {name} differs, max |diff| {(got - mo).abs().max():.3g} at {int((got - mo).abs().argmax())}"
                )
                r = out.reward[g][b, i].item()
                assert abs(r - rew[name]) < ATOL, f"{what}, copy {b}: reward of {name} {r} vs MPE2 {rew[name]}"
                assert bool(out.truncated[b]) == trunc[name], f"{what}, copy {b}: truncation differs"
                assert bool(out.terminated[b]) == term[name], f"{what}, copy {b}: termination differs"
        st = torch.as_tensor(env.state())
        assert torch.allclose(out.final_state[b], st, atol=ATOL, rtol=0), f"{what}, copy {b}: global state differs"


PARITY_CASES = [
    ("default-discrete", dict(), [0, 1, 2]),
    ("default-continuous", dict(continuous_actions=True), [3, 4]),
    ("small-discrete", dict(num_collectors=2, num_deposits=1, num_treasures=3, max_cycles=40), [5, 6]),
    ("large-continuous", dict(num_collectors=8, num_deposits=3, num_treasures=7, max_cycles=30, continuous_actions=True), [7]),
    ("few-treasures-discrete", dict(num_collectors=5, num_deposits=2, num_treasures=2, max_cycles=30), [8, 9]),
]


@pytest.mark.parametrize("name, cfg, seeds", PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_parity_with_mpe2(name, cfg, seeds):
    cont = bool(cfg.get("continuous_actions", False))
    mpes = [mpe_env(cfg, s) for s in seeds]
    worlds = [e.unwrapped.world for e in mpes]
    menv = maestro.make_env("collect_treasure", num_envs=len(seeds), seed=0, **cfg)
    menv.reset()
    write_worlds(menv, worlds)
    # The initial observations agree.
    obs0 = menv.observe()
    for b, e in enumerate(mpes):
        for i in range(menv.C):
            assert torch.allclose(obs0["collector"][b, i], torch.as_tensor(e.unwrapped.observe(f"collector_{i}")), atol=ATOL)
    gen = torch.Generator().manual_seed(sum(seeds) + 17)
    counts = {"collections": 0.0, "deposits": 0.0, "collisions": 0.0, "respawns": 0}
    for k in range(menv.spec.max_steps):
        counts["respawns"] += write_predicted_respawns(menv, worlds)
        actions = mixed_actions(menv, gen)
        out = menv.step(actions)
        mres = []
        for b, e in enumerate(mpes):
            obs, rew, term, trunc, _ = e.step(to_mpe_actions(actions, b, menv.C, cont))
            mres.append((obs, rew, term, trunc))
        compare_step(out, menv, mpes, mres, f"{name} step {k}")
        if k < menv.spec.max_steps - 1:  # after the last step maestro has auto-reset
            assert_world_equal(menv, worlds, f"{name} step {k}")
        for key in ("collections", "deposits", "collisions"):
            counts[key] += float(out.info[key].sum())
    assert bool(out.truncated.all())
    # The episodes exercised the event logic that parity is about.
    assert counts["collections"] > 0 and counts["respawns"] > 0, counts
    if name != "large-continuous":
        assert counts["deposits"] > 0, counts


def test_parity_crafted_conflicts():
    """Pickup conflicts resolved in MPE2's order, delivery on the spot, respawn, collisions."""
    cfg = dict(num_collectors=4, num_deposits=2, num_treasures=5, max_cycles=5)
    e = mpe_env(cfg, 11)
    w = e.unwrapped.world
    col = [((0.2, 0.2), None), ((0.22, 0.2), None), ((-0.5, -0.5), None), ((0.6, -0.6), 1)]
    dep = [(-0.8, 0.8), (0.6, -0.52)]
    tre = [((0.21, 0.2), 1, True), ((0.2, 0.23), 0, True), ((-0.5, -0.45), 0, True), ((-0.52, -0.5), 1, True), ((-999.0, -999.0), 0, False)]
    for a, (p, h) in zip(w.agents[:4], col):
        a.state.p_pos, a.state.p_vel, a.holding = np.array(p), np.zeros(2), h
    for a, p in zip(w.agents[4:], dep):
        a.state.p_pos, a.state.p_vel = np.array(p), np.zeros(2)
    for lm, (p, ty, alive) in zip(w.landmarks, tre):
        lm.state.p_pos, lm.type, lm.alive = np.array(p), ty, alive
    menv = maestro.make_env("collect_treasure", num_envs=1, **cfg)
    menv.reset()
    write_worlds(menv, [w])
    assert write_predicted_respawns(menv, [w]) == 1
    actions = {"collector": torch.zeros(1, 4, dtype=torch.long), "deposit": torch.zeros(1, 2, dtype=torch.long)}
    out = menv.step(actions)
    obs, rew, term, trunc, _ = e.step(to_mpe_actions(actions, 0, 4, False))
    compare_step(out, menv, [e], [(obs, rew, term, trunc)], "crafted")
    assert_world_equal(menv, [w], "crafted")
    # c0 took t0 (first of the two overlapping collectors), c1 took t1, c2 took t2 (not t3), c3 delivered.
    assert menv.holding[0].tolist() == [1, 0, 0, -1]
    assert menv.treasure_alive[0].tolist() == [False, False, False, True, True]
    assert out.info["collections"].item() == 3 and out.info["deposits"].item() == 1
    assert out.info["collisions"].item() == 1


# ---------------------------------------------------------------------------- MATRPO reward
def _set(env, pos, holding, tpos, ttype, alive, vel=None):
    s = env.get_state()
    s["pos"][0] = torch.tensor(pos)
    s["vel"][0] = torch.zeros_like(s["vel"][0]) if vel is None else torch.tensor(vel)
    s["holding"][0] = torch.tensor(holding)
    s["treasure_pos"][0] = torch.tensor(tpos)
    s["treasure_type"][0] = torch.tensor(ttype)
    s["treasure_alive"][0] = torch.tensor(alive)
    env.set_state(s)


NOOP = {"collector": torch.zeros(1, 2, dtype=torch.long), "deposit": torch.zeros(1, 1, dtype=torch.long)}


@pytest.mark.parametrize("reward", ["mpe", "matrpo"])
def test_reward_by_hand_collision_and_shaping(reward):
    # Two empty collectors 0.06 apart (overlap: -5 each), treasures at (0.5, 0) and (0, 0.3), deposit at (-0.4, 0).
    env = maestro.make_env("collect_treasure", num_envs=1, num_collectors=2, num_deposits=1, num_treasures=2, reward=reward)
    env.reset()
    _set(env, [[0.0, 0.0], [0.06, 0.0], [-0.4, 0.0]], [-1, -1], [[0.5, 0.0], [0.0, 0.3]], [0, 0], [True, True])
    out = env.step(NOOP)
    s0 = -0.1 * 0.3  # collector 0: nearest treasure (0, 0.3)
    s1 = -0.1 * float(np.hypot(0.06, 0.3))  # collector 1: nearest treasure (0, 0.3)
    q = -0.1 * 0.43  # deposit: no carrier -> distance to the centroid (0.03, 0)
    if reward == "mpe":
        exp_c, exp_d = [-5 + s0, -5 + s1], [q]
    else:
        exp_c, exp_d = [-5.0, -5.0], [q + s0 + s1]
    assert torch.allclose(out.reward["collector"][0], torch.tensor(exp_c), atol=1e-6)
    assert torch.allclose(out.reward["deposit"][0], torch.tensor(exp_d), atol=1e-6)
    assert out.info["collisions"].item() == 1 and out.info["collections"].item() == 0


@pytest.mark.parametrize("reward", ["mpe", "matrpo"])
def test_reward_by_hand_pickup_delivery_respawn(reward):
    # Collector 0 overlaps treasure 0 (pickup); collector 1 holds type 0 at the deposit (delivery).
    env = maestro.make_env("collect_treasure", num_envs=1, num_collectors=2, num_deposits=1, num_treasures=2, reward=reward)
    env.reset()
    _set(env, [[0.5, 0.05], [-0.4, 0.1], [-0.4, 0.0]], [-1, 0], [[0.5, 0.0], [0.0, 0.3]], [0, 0], [True, True])
    s = env.get_state()
    s["respawn_pos"][0, 1, 0] = torch.tensor([0.7, -0.2])  # where treasure 0 comes back at step 1
    env.set_state(s)
    out = env.step(NOOP)
    G = 10.0  # one pickup + one delivery
    d0 = float(np.hypot(0.9, 0.05))  # collector 0 now holds type 0: distance to the deposit
    s0 = -0.1 * d0
    s1 = -0.1 * float(np.hypot(0.4, 0.2))  # collector 1 empty again: nearest live treasure (0, 0.3)
    q = -0.1 * d0  # deposit: distance to its carrier (collector 0)
    if reward == "mpe":
        exp_c, exp_d = [G + s0, G + s1], [G + q]
    else:
        exp_c, exp_d = [0.0, 0.0], [G + q + s0 + s1]
    assert torch.allclose(out.reward["collector"][0], torch.tensor(exp_c), atol=1e-5)
    assert torch.allclose(out.reward["deposit"][0], torch.tensor(exp_d), atol=1e-5)
    assert out.info["collections"].item() == 1 and out.info["deposits"].item() == 1
    assert env.holding[0].tolist() == [0, -1]
    assert not bool(env.treasure_alive[0, 0]) and env.treasure_pos[0, 0].tolist() == [-999.0, -999.0]
    env.step(NOOP)  # treasure 0 respawns from the table
    assert bool(env.treasure_alive[0, 0])
    assert torch.allclose(env.treasure_pos[0, 0], torch.tensor([0.7, -0.2]))


def test_matrpo_is_mpe_reassigned():
    """In lockstep from one state: r_c^matrpo = collision part of r_c^mpe; the deposits gain the collectors' shaping."""
    kw = dict(num_envs=32, seed=3)
    a = maestro.make_env("collect_treasure", reward="mpe", **kw)
    b = maestro.make_env("collect_treasure", reward="matrpo", **kw)
    a.reset()
    b.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        act = mixed_actions(a, gen)
        ra, rb = a.step(act), b.step(act)
        G = 5.0 * (ra.info["collections"] + ra.info["deposits"])
        shaping = ra.reward["collector"] - rb.reward["collector"] - G[:, None]  # s_c
        assert torch.allclose(rb.reward["deposit"], ra.reward["deposit"] + shaping.sum(1, keepdim=True), atol=1e-5)
        assert bool((rb.reward["collector"] <= 0).all()) and bool((rb.reward["collector"] % 5 == 0).all())
        assert bool((shaping <= 1e-6).all())


# ---------------------------------------------------------------------------- baseline and rendering
@pytest.mark.parametrize("reward", ["mpe", "matrpo"])
@pytest.mark.parametrize("continuous", [False, True])
def test_heuristic_beats_random(continuous, reward):
    def mean_return(policy, seed):
        env = maestro.make_env("collect_treasure", num_envs=64, seed=seed, continuous_actions=continuous, reward=reward)
        env.reset()
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(64)
        for _ in range(env.spec.max_steps):
            out = env.step(policy(env, gen))
            total += out.reward["collector"].sum(1) + out.reward["deposit"].sum(1)
        return total.mean().item()

    heur = mean_return(lambda env, g: heuristic_treasure(env), 0)
    rand = mean_return(lambda env, g: random_actions(env, g), 0)
    assert heur > rand + 10.0, (heur, rand)


def test_heuristic_shapes_and_legal():
    for cont in (False, True):
        env = maestro.make_env("collect_treasure", num_envs=5, num_collectors=3, num_deposits=2, num_treasures=4, continuous_actions=cont)
        env.reset()
        a = heuristic_treasure(env)
        env.step(a)  # validate_actions raises on a shape, dtype or range error
        assert a["collector"].shape[:2] == (5, 3) and a["deposit"].shape[:2] == (5, 2)


def test_render_colours_by_holding():
    env = maestro.make_env("collect_treasure", num_envs=2, num_collectors=1, num_deposits=2, num_treasures=1)
    env.reset()
    _set(env, [[0.0, 0.0], [-0.6, 0.6], [0.6, -0.6]], [1], [[0.5, 0.5]], [0], [True])
    img = env.render()
    H, W = img.shape[:2]
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    centre = img[H // 2, W // 2]  # the collector at the origin
    assert not (centre == 255).all() and not (centre[0] == centre[1] == centre[2])  # tinted by type 1, not grey
    s = env.get_state()
    s["holding"][0, 0] = -1
    env.set_state(s)
    grey = env.render()[H // 2, W // 2]
    assert grey[0] == grey[1] == grey[2] and grey[0] < 255


def test_obs_dims_formula():
    from maestro.envs.particle.collect_treasure import CollectTreasureConfig

    assert obs_dims(CollectTreasureConfig()) == (86, 84)
    assert obs_dims(CollectTreasureConfig(num_collectors=2, num_deposits=1, num_treasures=3)) == (4 + 1 + 2 * 6 + 3 * 3, 4 + 2 * 6 + 3 * 3)
