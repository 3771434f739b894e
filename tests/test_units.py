"""unit_combat: conformance on the three scenarios, and hand-built situations (through ``set_state``)
each against a hand-computed outcome: shots and frames to kill, moving into range, cooldown jitter,
collisions, the bot's target choice, overkill, the eq. (2) reward, observations and bad input."""

import math

import pytest
import torch

import maestro
from maestro.envs.check import check_env
from maestro.envs.units.engine import (
    MARINE,
    ZERGLING,
    encode_attack,
    focus_fire,
    focus_fire_no_overkill,
    tokens,
)

FAR = 1e9  # a cooldown (frames) that never runs out within a test


def make(scenario="m15v16", num_envs=1, seed=0, **kw):
    env = maestro.make_env("unit_combat", num_envs=num_envs, seed=seed, scenario=scenario, **kw)
    env.reset()
    return env


def place(env, units):
    """Every copy: units ``{index: (x, y[, hp[, cd]])}`` alive as given, all others dead far away."""
    s = env.get_state()
    s["hp"][:] = 0.0
    s["cd"][:] = 0.0
    s["target"][:] = -1
    s["pos"][:] = torch.tensor([10.0, 10.0])
    for u, spec in units.items():
        x, y = spec[0], spec[1]
        s["pos"][:, u] = torch.tensor([float(x), float(y)])
        s["hp"][:, u] = float(spec[2]) if len(spec) > 2 else env.max_hp[u]
        s["cd"][:, u] = float(spec[3]) if len(spec) > 3 else 0.0
    env.set_state(s)


def stay(env):
    """Move orders to the unit's own position (a = (-1, 0, -1)): every agent stands still."""
    a = torch.zeros(env.num_envs, env.n, 3)
    a[..., 0], a[..., 2] = -1.0, -1.0
    return a


def attack(env, targets):
    """Agents in ``targets`` {agent: unit} attack that unit; the others stand still."""
    a = stay(env)
    tgt = torch.zeros(env.num_envs, env.n, dtype=torch.long) + env.n
    for i, j in targets.items():
        tgt[:, i] = j
    enc = encode_attack(env, tgt)
    for i in targets:
        a[:, i] = enc[:, i]
    return {"agent": a}


@pytest.mark.parametrize("scenario", ["m15v16", "m10v13z", "w15v17"])
def test_check_env(scenario):
    check_env("unit_combat", num_envs=3, seed=1, scenario=scenario, max_steps=15)


def test_check_env_with_the_retaliating_team_rewarded_variant():
    check_env("unit_combat", num_envs=3, seed=1, scenario="m15v16", max_steps=15, bot_idle="hold", bot_retaliate=True, reward_scope="team")


def test_marine_kills_zergling_in_six_shots_with_jittered_cooldowns():
    env = make("m10v13z")
    r = MARINE.radius + ZERGLING.radius
    place(env, {0: (1000, 1000), 10: (1000 + r + 10, 1000, 35, FAR)})  # zergling in range, never strikes
    shots, hp = [], 35.0
    for step in range(20):
        cd_before = float(env.cd[0, 0])
        out = env.step(attack(env, {0: 10}))
        new_hp = float(out.info["enemy_hp"][0])  # the zergling's, before any auto-reset
        if new_hp < hp:
            assert hp - new_hp == min(6.0, hp), "one Gauss Rifle shot per step: 6 damage"
            fired_at = 8 * step + cd_before  # the shot leaves when the cooldown runs out
            if shots:
                assert 14 <= fired_at - shots[-1] <= 17, "cooldown 15 with BW jitter in {-1, 0, 1, 2}"
            shots.append(fired_at)
            hp = new_hp
        if bool(out.done[0]):
            break
    assert len(shots) == 6 and shots[0] == 0, "ceil(35 / 6) = 6 shots, the first at frame 0"
    assert 70 <= shots[-1] <= 85 and step + 1 == shots[-1] // 8 + 1, "the kill at frame 70..85, in step 9..11"
    assert out.terminated[0] and out.info["win"][0] == 1.0 and out.info["enemy_units"][0] == 0
    assert out.info["own_hp"][0] == 40.0, "the zergling never struck"


def test_out_of_range_unit_moves_into_range_before_firing():
    env = make("m15v16")
    r = 2 * MARINE.radius
    place(env, {0: (1000, 1000), 15: (1000 + r + 128 + 40, 1000, 40, FAR)})  # 40 px out of range
    env.step(attack(env, {0: 15}))
    # arrival takes ceil(40 / 4) = 10 frames > 8: no shot; both close 32 px (the bot chases too)
    assert float(env.hp[0, 15]) == 40.0 and float(env.cd[0, 0]) == 0.0
    assert float(env.pos[0, 0, 0]) == pytest.approx(1032.0) and float(env.pos[0, 15, 0]) == pytest.approx(1000 + r + 168 - 32)
    env.step(attack(env, {0: 15}))  # edge gap 104 px <= 128: fires at frame 0 without moving
    assert float(env.hp[0, 15]) == 34.0 and float(env.pos[0, 0, 0]) == pytest.approx(1032.0)


def test_cooldown_jitter_bounds_and_double_zergling_strikes():
    env = make("m15v16", num_envs=400, seed=3)
    place(env, {0: (1000, 1000), 15: (1030, 1000, 40, FAR)})
    env.step(attack(env, {0: 15}))
    left = env.cd[:, 0]  # fired at frame 0: cooldown 15 + jitter - 8 frames
    assert set(left.tolist()) == {6.0, 7.0, 8.0, 9.0}
    z = make("m10v13z", num_envs=400, seed=4)
    place(z, {0: (1000, 1000, 40, FAR), 10: (1020, 1000)})
    z.step({"agent": stay(z)})
    dmg = 40.0 - z.hp[:, 0]
    assert set(dmg.tolist()) == {5.0, 10.0}, "a zergling (cooldown 8 - 1) strikes twice in 8 frames when the jitter is -1"
    assert 0.15 < float((dmg == 10.0).float().mean()) < 0.35, "jitter -1 has probability 1/4"


def test_ground_units_do_not_overlap_after_a_step_wraiths_do():
    env = make("m15v16")
    place(env, {0: (1000, 1000), 1: (1010, 1000), 15: (1800, 1800, 40, FAR)})
    env.step({"agent": stay(env)})
    d = float((env.pos[0, 0] - env.pos[0, 1]).norm())
    assert d >= 2 * MARINE.radius - 0.05, f"marines overlap: centres {d:.2f} px apart"
    a = stay(env)
    a[0, 0] = torch.tensor([-1.0, 0.0, 2 * 10 / 224 - 1])  # both walk onto the same point
    a[0, 1] = torch.tensor([-1.0, 1.0, 2 * 10 / 224 - 1])
    place(env, {0: (1000, 1000), 1: (1020, 1000), 15: (1800, 1800, 40, FAR)})
    env.step({"agent": a})
    assert float((env.pos[0, 0] - env.pos[0, 1]).norm()) >= 2 * MARINE.radius - 0.05, "stacked units split (to 0.02 px: the tie offsets)"
    w = make("w15v17")
    place(w, {0: (1000, 1000), 1: (1020, 1000), 15: (1800, 1800, 120, FAR)})
    w.step({"agent": a})
    assert float((w.pos[0, 0] - w.pos[0, 1]).norm()) < 1e-3, "flying units pass over each other"


def test_bot_attacks_the_closest_attacker_and_keeps_its_target():
    env = make("m15v16")
    place(env, {0: (1000, 1000), 1: (1000, 1090), 15: (1000, 1050, 40, 0)})  # unit 0 is 50 px, unit 1 40 px away
    env.step({"agent": stay(env)})
    assert float(env.hp[0, 1]) == 34.0 and float(env.hp[0, 0]) == 40.0
    assert int(env.target[0, 15]) == 1
    s = env.get_state()
    s["pos"][0, 0] = torch.tensor([1000.0, 1030.0])  # unit 0 now closer; the bot keeps unit 1
    s["cd"][0, 15] = 0.0
    env.set_state(s)
    env.step({"agent": stay(env)})
    assert float(env.hp[0, 1]) == 28.0 and float(env.hp[0, 0]) == 40.0


def test_overkill_by_the_bot_and_none_by_the_no_overkill_script():
    env = make("m15v16")
    place(env, {0: (1000, 1000, 6), 1: (1500, 1500), 15: (1060, 1000), 16: (940, 1000), 17: (1000, 1060)})
    env.step({"agent": stay(env)})
    assert float(env.hp[0, 0]) == 6 - 3 * 6, "three bots fire at a 6-hp marine: two shots wasted"
    env = make("m15v16")
    place(env, {0: (1000, 1000), 1: (1000, 1040), 2: (1000, 960), 15: (1100, 1000, 6, FAR), 16: (1100, 1030, 40, FAR)})
    targets = env.decode_actions(focus_fire(env)["agent"])[1][0, :3]
    assert targets.tolist() == [15, 15, 15], "focus fire sends all three at the weakest"
    targets = env.decode_actions(focus_fire_no_overkill(env)["agent"])[1][0, :3]
    assert sorted(targets.tolist()) == [15, 16, 16], "one shot kills the 6-hp marine; the others take the next"
    env.step(focus_fire_no_overkill(env))
    assert float(env.hp[0, 15]) == 0.0 and float(env.hp[0, 16]) == 28.0


def test_eq2_reward_on_a_constructed_step():
    env = make("m15v16")
    # agent 0 kills e0 next to it; e1 kills agent 1, 300 px from agent 0 (outside its 224-px circle)
    place(env, {0: (1000, 1000), 1: (1000, 1300, 6), 15: (1100, 1000, 6, FAR), 16: (1000, 1400)})
    out = env.step(attack(env, {0: 15}))
    assert not out.done[0]
    r = out.reward["agent"][0]
    assert r[0] == 1.0, "agent 0: 0 own lost, 1 enemy lost in its circle"
    assert r[1] == -1.0, "agent 1: itself lost, no enemy lost in its circle"
    assert (r[2:] == 0).all(), "dead agents get 0"
    out = env.step(attack(env, {0: 16}))  # 16 is 400 px away: no kill this step
    assert out.reward["agent"][0].abs().sum() == 0
    env.set_state({**env.get_state(), "hp": env.hp.index_fill(1, torch.tensor([16]), 6.0), "pos": env.pos.index_copy(1, torch.tensor([16]), torch.tensor([[[1050.0, 1000.0]]]))})
    out = env.step(attack(env, {0: 16}))
    assert out.terminated[0] and out.info["win"][0] == 1.0
    assert out.reward["agent"][0, 0] == 1.0 + 1.0 and (out.reward["agent"][0, 1:] == 1.0).all(), "terminal +1 to every agent, dead or alive"


@pytest.mark.parametrize("counts", ["deaths", "moving"])
def test_team_reward_scope_pays_every_agent_the_whole_maps_deaths(counts):
    """``reward_scope="team"``: the same constructed step as above, every agent (dead or alive) gets
    (enemies lost) - (own lost) over the whole map: 1 - 1 = 0; a later kill pays all of them +1.
    Over the whole map a recount (``moving``) changes only by deaths: the same rewards."""
    env = make("m15v16", reward_scope="team", reward_counts=counts)
    place(env, {0: (1000, 1000), 1: (1000, 1300, 6), 2: (600, 600), 15: (1100, 1000, 6, FAR), 16: (1000, 1400), 17: (700, 600, 6, FAR)})
    out = env.step(attack(env, {0: 15}))
    assert not out.done[0] and (out.reward["agent"][0] == 0.0).all()
    out = env.step(attack(env, {2: 17}))
    assert not out.done[0] and (out.reward["agent"][0] == 1.0).all(), "one enemy lost, far from most agents, several of them dead"


def test_hp_reward_counts_hit_points_as_shares_of_the_maximum():
    """The constructed step of the eq. (2) test with ``reward_counts="hp"``: a 6-hp enemy killed
    near agent 0 is 6/40 of a Marine, agent 1 losing its last 6 hp is -6/40."""
    env = make("m15v16", reward_counts="hp")
    place(env, {0: (1000, 1000), 1: (1000, 1300, 6), 15: (1100, 1000, 6, FAR), 16: (1000, 1400)})
    r = env.step(attack(env, {0: 15})).reward["agent"][0]
    assert r[0] == pytest.approx(6 / 40) and r[1] == pytest.approx(-6 / 40) and (r[2:] == 0).all()


def test_draw_reward_replaces_the_nonwin_reward_of_draws_only():
    env = make("m15v16", max_steps=2, draw_reward=-5.0)
    place(env, {0: (1000, 1000), 15: (1800, 1000)})  # far apart: nobody dies in 2 steps
    env.step({"agent": stay(env)})
    out = env.step({"agent": stay(env)})
    assert out.info["draw"][0] == 1.0 and (out.reward["agent"][0] == -5.0).all()
    env = make("m15v16", draw_reward=-5.0)
    place(env, {0: (1000, 1000, 6), 15: (1100, 1000)})  # agent 0 dies: a loss keeps nonwin_reward
    out = env.step({"agent": stay(env)})
    assert out.info["win"][0] == 0.0 and out.info["draw"][0] == 0.0 and out.reward["agent"][0, 1] == pytest.approx(-0.2)


def test_moving_reward_counts_recount_the_circle():
    env = make("m15v16", reward_counts="moving")
    place(env, {0: (1000, 1000), 15: (1250, 1000, 40, FAR)})  # enemy 250 px away, walks into the circle
    out = env.step({"agent": stay(env)})
    assert out.reward["agent"][0, 0] == -1.0, "one more enemy within 7 tiles"


def test_observation_sees_only_its_circle():
    env = make("m15v16")
    place(env, {0: (1000, 1000), 1: (1000, 1300), 15: (1100, 1000, 20, 7.5)})
    own, tok, mask = tokens(env.observe()["agent"], env.U)
    assert mask[0, 0].nonzero().squeeze(1).tolist() == [15], "agent 0 sees the enemy at 100 px, not agent 1 at 300 px nor itself"
    assert tok[0, 0, 15].tolist() == pytest.approx([1.0, 100 / 224, 0.0, 0.5, 0.5, 1.0, 1.0, 0.0, 0.0])
    assert own[0, 0].tolist() == pytest.approx([1000 / 2048, 1000 / 2048, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert not env.observe()["agent"][0, 2:].any(), "dead agents observe zeros"
    assert env.state()[0].sum() == 2 and env.alive()["agent"][0, :2].all() and not env.alive()["agent"][0, 2:].any()


def test_spawn_layout_is_seeded_and_ground_units_do_not_overlap():
    a, b = make("m10v13z", num_envs=50, seed=7), make("m10v13z", num_envs=50, seed=7)
    assert torch.equal(a.pos, b.pos)
    own, foe = a.pos[:, :10].mean(1), a.pos[:, 10:].mean(1)
    gap = (foe[:, 0] - own[:, 0]) / 32
    assert (gap > 12 - 1.5).all() and (gap < 12 + 1.5).all(), "group centres 12 tiles apart (m10v13z)"
    d = torch.cdist(a.pos.double(), a.pos.double()).float() + torch.eye(a.U) * 1e6
    assert (d >= a.radius_sum - 1e-3).all(), "centre distances of ground units at least the sum of radii"
    assert torch.allclose(a.edge_distance(), (d - a.radius_sum).clamp(min=0.0) * (1 - torch.eye(a.U)), atol=1e-3)


def test_bad_input():
    env = make("m15v16", num_envs=2)
    with pytest.raises(ValueError, match="agent"):
        env.step({"agent": torch.full((2, 15, 3), 1.5)})
    with pytest.raises(ValueError, match="agent"):
        env.step({"agent": torch.zeros(2, 15, 2)})
    with pytest.raises(ValueError, match="scenario"):
        maestro.make_env("unit_combat", scenario="m5v5")
    with pytest.raises(ValueError, match="pos"):
        env.set_state({**env.get_state(), "pos": torch.full((2, 31, 2), -5.0)})
    with pytest.raises(ValueError, match="expected 286"):
        tokens(torch.zeros(3, 10), env.U)


def test_render_draws_units():
    env = make("w15v17")
    env.step({"agent": stay(env)})
    img = env.render()
    assert img.shape == (512, 512, 3) and img.dtype.name == "uint8"
    blue = (img[..., 2] > 200) & (img[..., 0] < 80)
    red = (img[..., 0] > 200) & (img[..., 2] < 80)
    assert blue.sum() > 100 and red.sum() > 100
    assert math.isfinite(float(env.state().sum()))


@pytest.mark.parametrize("scenario, tiles, sight", [("m15v16", 4, 7), ("m10v13z", 3, 5), ("w15v17", 5, 7)])
def test_bot_acquires_within_openbws_acquisition_range(scenario, tiles, sight):
    """OpenBW: acquisition range = max(units.dat's, weapon range // 32) tiles, by edge distance (a
    holding bot starts moving only toward a target it acquired); ``sight`` uses the sight range."""
    own = make(scenario).n
    gap = lambda env, d: env.radius[0] + env.radius[own] + d  # noqa: E731  centre distance for edge distance d
    for acq, reach in (("openbw", tiles), ("sight", sight)):
        for d, acquired in ((reach * 32 - 2, True), (reach * 32 + 2, False)):
            env = make(scenario, bot_idle="hold", bot_acquisition=acq)
            place(env, {0: (1000, 1000), own: (1000 + float(gap(env, d)), 1000)})
            env.step({"agent": stay(env)})
            assert (int(env.get_state()["target"][0, own]) == 0) is acquired, (acq, d)


@pytest.mark.parametrize("retaliate", [False, True])
def test_bot_retaliation_pulls_in_the_neighbours_of_a_hit_bot(retaliate):
    """OpenBW ``on_unit_damage``: a bot hit by agent 0 turns on it (it is in range anyway) and so
    does its neighbour 80 px behind, out of its own acquisition range, which then walks in; without
    ``bot_retaliate`` the holding neighbour stays put."""
    env = make("m15v16", bot_idle="hold", bot_retaliate=retaliate)
    x15 = 1000 + float(env.radius[0] + env.radius[15]) + 120  # edge distance 120 px < 128
    place(env, {0: (1000, 1000), 15: (x15, 1000, 40, FAR), 16: (x15 + 80, 1000, 40, FAR)})
    env.step(attack(env, {0: 15}))
    assert int(env.get_state()["target"][0, 15]) == 0
    assert (int(env.get_state()["target"][0, 16]) == 0) is retaliate
    env.step(attack(env, {0: 15}))
    moved = float(env.pos[0, 16, 0]) < x15 + 80 - 1
    assert moved is retaliate


def test_bot_attack_moves_onto_our_army_or_holds():
    far = {0: (1000, 1000), 15: (1400, 1000)}  # 400 px: outside the bot's 7-tile acquisition range
    env = make("m15v16")
    place(env, far)
    env.step({"agent": stay(env)})
    assert float(env.pos[0, 15, 0]) == pytest.approx(1400 - 32), "attack-move: 8 frames at 4 px toward our centroid"
    env = make("m15v16", bot_idle="hold")
    place(env, far)
    env.step({"agent": stay(env)})
    assert float(env.pos[0, 15, 0]) == pytest.approx(1400)


# ------------------------------------------------------------------ action="target" (discrete, not the paper's)
def test_check_env_with_the_target_action():
    check_env("unit_combat", num_envs=3, seed=1, scenario="m10v13z", max_steps=15, action="target")


def test_wrapped_angle_is_periodic_and_unbounded():
    """``angle="wrap"``: the angle's Box is unbounded and an angle and the same angle plus 2 (a full
    turn) play the same battle; the other components keep their bounds."""
    check_env("unit_combat", num_envs=2, seed=1, scenario="m15v16", max_steps=10, angle="wrap")
    space = make(angle="wrap").spec.groups["agent"].action_space
    assert math.isinf(space.high[1]) and space.high[0] == space.high[2] == 1.0
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 15, 3, generator=gen) * 2 - 1
    turned = a.clone()
    turned[..., 1] += torch.tensor([2.0, -4.0, 6.0, 2.0]).reshape(4, 1, 1)
    outs = []
    for acts in (a, turned):
        env = make(angle="wrap", num_envs=1, seed=3)
        outs.append([env.step({"agent": step}) for step in acts])
    for x, y in zip(*outs):
        assert torch.allclose(x.obs["agent"], y.obs["agent"], atol=1e-3) and torch.equal(x.reward["agent"], y.reward["agent"])
    with pytest.raises(ValueError, match="agent"):
        make(angle="wrap").step({"agent": torch.tensor([[[1.5, 0.0, 0.0]] * 15])})
    with pytest.raises(ValueError, match="angle"):
        make(angle="loop")


def test_target_action_holds_moves_one_step_and_attacks_the_named_enemy():
    env = make("m15v16", action="target")
    assert env.spec.groups["agent"].action_space.n == 9 + 16 and env.spec.groups["agent"].has_action_mask
    place(env, {0: (1000, 1000), 1: (1000, 1200), 2: (1000, 1400), 3: (1000, 1600),
                15: (1000 + 2 * MARINE.radius + 100, 1000, 40, FAR), 16: (2000, 2000, 40, FAR)})
    a = torch.zeros(1, 15, dtype=torch.long)
    a[0, 1], a[0, 2], a[0, 3], a[0, 0] = 1, 3, 8, 9 + 0  # east, +y (90°), 315°, attack enemy 0
    env.step({"agent": a})
    step = MARINE.speed * 8  # 32 px: one step's travel
    assert env.pos[0, 1].tolist() == pytest.approx([1000 + step, 1200])
    assert env.pos[0, 2].tolist() == pytest.approx([1000, 1400 + step])
    assert env.pos[0, 3].tolist() == pytest.approx([1000 + step / math.sqrt(2), 1600 - step / math.sqrt(2)], abs=1e-3)
    assert float(env.hp[0, 15]) == 34.0 and env.pos[0, 0].tolist() == pytest.approx([1000, 1000]), "in range: fires, stands"
    a[:] = 0
    a[0, 0] = 9 + 1  # enemy 1 is 1000+ px away: chased at top speed
    env.step({"agent": a})
    assert float(env.pos[0, 0].sub(torch.tensor([1000.0, 1000.0])).norm()) == pytest.approx(step, abs=1e-3)
    assert env.pos[0, 1].tolist() == pytest.approx([1000 + step, 1200]), "hold stays put"


def test_target_action_masks_and_illegal_attacks_hold():
    env = make("m15v16", action="target")
    place(env, {0: (1000, 1000), 15: (1000 + 2 * MARINE.radius + 100, 1000, 40, FAR)})  # agent 1.. dead, enemy 1.. dead
    mask = env.action_mask()["agent"]
    assert mask.shape == (1, 15, 25)
    assert mask[0, 0, :10].all() and not mask[0, 0, 10:].any(), "living agent: hold, 8 moves, attack the living enemy 0"
    assert mask[0, 1, 0] and not mask[0, 1, 1:].any(), "a dead agent only holds"
    a = torch.zeros(1, 15, dtype=torch.long)
    a[0, 0] = 9 + 5  # attack a dead enemy: holds
    env.step({"agent": a})
    assert env.pos[0, 0].tolist() == pytest.approx([1000, 1000]) and float(env.hp[0, 15]) == 40.0


@pytest.mark.parametrize("script", [focus_fire, focus_fire_no_overkill])
def test_scripts_play_the_same_battle_with_either_action(script):
    """Within ``action_radius`` pointing at a unit selects that unit: both action forms replay one battle."""
    envs = [make("m15v16", num_envs=2, seed=4, action=k, spawn_gap=6.0) for k in ("bicnet", "target")]
    for _ in range(12):
        for env in envs:
            env.step(script(env))
        assert torch.equal(envs[0].hp, envs[1].hp) and torch.allclose(envs[0].pos, envs[1].pos, atol=1e-3)


def test_target_action_bad_input():
    env = make("m15v16", action="target")
    with pytest.raises(ValueError, match="must lie in \\[0, 25\\)"):
        env.step({"agent": torch.full((1, 15), 25, dtype=torch.long)})
    with pytest.raises(ValueError, match="integer tensor"):
        env.step({"agent": torch.zeros(1, 15)})
    with pytest.raises(ValueError, match="'action' must be one of"):
        maestro.make_env("unit_combat", action="point")


# ------------------------------------------------------------------ curriculum over the enemy count (not the paper's)
def test_enemy_curriculum_schedule_and_spawn():
    env = make("m15v16", num_envs=3, curriculum_enemies=6, curriculum_start=0.2, curriculum_end=0.7)
    assert env.enemies == 16 and int(env.alive_units[:, 15:].sum(1).min()) == 16, "a fresh env stands at initial_progress 1"
    assert [env.enemy_count(p) for p in (0.0, 0.2, 0.45, 0.7, 1.0)] == [6, 6, 11, 16, 16]  # 6 + 10 * (0.25 / 0.5) = 11
    assert env.set_progress(0.1) == 6
    env.reset()
    alive = env.alive_units
    assert alive[:, :15].all() and alive[:, 15:21].all() and not alive[:, 21:].any(), "the first 6 enemies of the formation"
    env.step({"agent": stay(env)})
    assert not env.alive_units[:, 21:].any() and float(env.hp[:, 21:].abs().sum()) == 0.0, "the others stay dead"
    assert make("m15v16", curriculum_enemies=0).enemy_count(0.0) == 16, "0: no curriculum"


def test_enemy_curriculum_battle_is_won_when_the_few_enemies_die():
    env = make("m15v16", curriculum_enemies=1, initial_progress=0.0, spawn_gap=4.0)
    assert int(env.alive_units[0, 15:].sum()) == 1
    for _ in range(30):
        out = env.step({"agent": encode_attack(env, torch.full((1, 15), 15))})
        if bool(out.done[0]):
            break
    assert out.info["win"][0] == 1.0 and out.info["enemy_units"][0] == 0
    env.reset()  # a reset of one copy must leave the unit constants alone
    assert env.max_hp[15:].eq(40.0).all() and int(env.alive_units[0, 15:].sum()) == 1


def test_check_env_with_the_enemy_curriculum():
    check_env("unit_combat", num_envs=3, seed=1, scenario="w15v17", max_steps=15, curriculum_enemies=3, initial_progress=0.0)


def test_enemy_curriculum_bad_input():
    with pytest.raises(ValueError, match="'curriculum_enemies' must be an integer in \\[0, 13\\]"):
        maestro.make_env("unit_combat", scenario="m10v13z", curriculum_enemies=14)
    with pytest.raises(ValueError, match="'curriculum_end'"):
        maestro.make_env("unit_combat", curriculum_enemies=3, curriculum_start=0.6, curriculum_end=0.5)
    with pytest.raises(ValueError, match="'progress' must lie in"):
        make("m15v16").set_progress(1.5)


def reference_observation(env):
    """The module docstring's observation written unit by unit (plain loops), for checking the batched one."""
    n, U, R, W = env.n, env.U, env.view_px, env.map_px
    types = env.type_onehot
    out = torch.zeros(env.num_envs, n, 7 + 9 * U)
    for b in range(env.num_envs):
        alive = env.hp[b] > 0
        for i in range(n):
            if not alive[i]:
                continue
            xi, yi = env.pos[b, i].tolist()
            out[b, i, :4] = torch.tensor([xi / W, yi / W, float(env.hp[b, i] / env.max_hp[i]), float(env.cd[b, i] / env.weapon_cooldown[i])])
            out[b, i, 4:7] = types[i]
            for u in range(U):
                dx, dy = float(env.pos[b, u, 0]) - xi, float(env.pos[b, u, 1]) - yi
                if u == i or not alive[u] or math.hypot(dx, dy) > R:
                    continue
                feats = [1.0, dx / R, dy / R, float(env.hp[b, u] / env.max_hp[u]), float(env.cd[b, u] / env.weapon_cooldown[u]), float(u >= n), *types[u].tolist()]
                for f, v in enumerate(feats):
                    out[b, i, 7 + f * U + u] = v
    return out


@pytest.mark.parametrize("scenario", ["m15v16", "w15v17"])
def test_observation_matches_a_unit_by_unit_reference_mid_battle(scenario):
    env = make(scenario, num_envs=3, seed=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        out = env.step(maestro.envs.api.random_actions(env, g))
    ref = reference_observation(env)
    assert (env.hp[:, : env.n] <= 0).any() and ref[..., 7 : 7 + env.U].sum() > 50, "a battle with dead agents and many units in view"
    torch.testing.assert_close(out.obs["agent"], ref, atol=1e-5, rtol=1e-5)


def test_observations_handed_out_are_never_overwritten_by_later_steps():
    env = make("m15v16", num_envs=64, seed=2, max_steps=6)  # copies reset every 6 steps
    g = torch.Generator().manual_seed(0)
    held = []
    for _ in range(20):
        out = env.step(maestro.envs.api.random_actions(env, g))
        a, f = out.obs["agent"], out.final_obs["agent"]
        held.append((a, a.clone(), f, f.clone(), a[:, 0], a[:, 0].clone(), a.numpy(), a.numpy().copy(), out.state, out.state.clone()))
    for a, a0, f, f0, v, v0, arr, arr0, s, s0 in held:
        assert torch.equal(a, a0) and torch.equal(f, f0) and torch.equal(v, v0) and (arr == arr0).all() and torch.equal(s, s0)


def test_output_pool_reuses_memory_only_once_nothing_holds_it():
    from maestro.envs.buffers import OutputPool

    pool = OutputPool(torch.device("cpu"), keep=2)
    a = pool.empty(4, 5)
    ptr = a.data_ptr()
    view = a[1:]
    del a
    b = pool.empty(4, 5)
    assert b.data_ptr() != ptr, "a view of the first tensor still lives"
    del view
    c = pool.empty(4, 5)
    assert c.data_ptr() == ptr, "nothing holds the first buffer: its memory comes back"
    arr = c.numpy()
    del c
    assert pool.empty(4, 5).data_ptr() not in (ptr, b.data_ptr()), "a NumPy view keeps the buffer too"
    del arr
    assert pool.empty(4, 5).data_ptr() == ptr
    assert pool.empty(2, 3).shape == (2, 3) and pool.empty(2, dtype=torch.int64).dtype == torch.int64
    with pytest.raises(ValueError, match="keep"):
        OutputPool(torch.device("cpu"), keep=0)


def test_env_pickles_and_deep_copies_and_the_copy_steps_the_same():
    import copy
    import pickle

    env = make("m15v16", num_envs=4, seed=1)
    g = torch.Generator().manual_seed(0)
    env.step(maestro.envs.api.random_actions(env, g))
    acts = maestro.envs.api.random_actions(env, g)
    twins = (pickle.loads(pickle.dumps(env)), copy.deepcopy(env))
    a = env.get_state()
    ref = env.step(acts)
    for twin in twins:
        b = twin.get_state()
        assert all(torch.equal(a[k], b[k]) for k in a)
        out = twin.step(acts)
        assert torch.equal(out.obs["agent"], ref.obs["agent"]) and torch.equal(out.reward["agent"], ref.reward["agent"])
