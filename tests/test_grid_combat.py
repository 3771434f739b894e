"""Combat: conformance, damage, death, cooldown, visibility, the bot's choices, movement, terminal
rewards, action masks and bad input (hand-built situations through ``set_state``)."""

import math

import pytest
import torch

import maestro
from maestro.envs.api import random_actions
from maestro.envs.check import check_env
from maestro.envs.grid.combat import ATTACK, LEFT, NOOP, RIGHT, UP, attack_nearest


def make(num_envs=1, seed=0, **kw):
    env = maestro.make_env("combat", num_envs=num_envs, seed=seed, **kw)
    env.reset()
    return env


def place(env, pos, hp=None, cd=None):
    """Set every copy to units at ``pos`` (agents first, then bots) with ``hp`` / ``cd`` lists."""
    U = env.U
    assert len(pos) == U
    s = env.get_state()
    s["pos"][:] = torch.tensor(pos)
    s["hp"][:] = torch.tensor(hp if hp is not None else [env.cfg.hp] * U)
    s["cd"][:] = torch.tensor(cd if cd is not None else [0] * U)
    env.set_state(s)


def act(env, *a):
    return {"agent": torch.tensor([list(a)] * env.num_envs)}


def test_check_env():
    check_env("combat")


def test_check_env_variants():
    check_env("combat", num_envs=3, reward="ms_marl", bot_idle="wander", bot_shared_vision=False, n_agents=3, n_enemies=4, dim=9)


def test_spawn_is_spread_around_team_centres_without_overlap():
    env = make(num_envs=400, seed=3)
    pos = env.get_state()["pos"]
    flat = pos[..., 0] * 15 + pos[..., 1]
    assert all(len(set(row.tolist())) == 10 for row in flat), "two units spawned on one cell"
    for team in (slice(0, 5), slice(5, 10)):
        p = pos[:, team]
        spread = (p[:, :, None] - p[:, None]).abs().max(-1).values.max()
        assert spread <= 2 * env.cfg.dispersion
    assert (env.get_state()["hp"] == 3).all()


def test_damage_cooldown_and_death():
    env = make(n_agents=1, n_enemies=1)
    place(env, [(7, 7), (7, 8)], cd=[0, 99])  # the bot cannot shoot back (long cooldown)
    out = env.step(act(env, ATTACK + 0))
    assert env.get_state()["hp"][0].tolist() == [3, 2] and env.get_state()["cd"][0, 0] == 1
    assert not env.action_mask()["agent"][0, 0, ATTACK], "attack masked during the cooldown"
    assert out.obs["agent"][0, 0, 1 + 3] == 1.0, "own cooldown observed"
    env.step(act(env, ATTACK + 0))  # during the cooldown: no effect
    assert env.get_state()["hp"][0].tolist() == [3, 2] and env.get_state()["cd"][0, 0] == 0
    env.step(act(env, ATTACK + 0))
    env.step(act(env, NOOP))
    out = env.step(act(env, ATTACK + 0))  # third hit kills the last bot: a win
    assert out.terminated[0] and out.info["win"][0] == 1.0 and out.info["enemy_hp"][0] == 0
    assert out.reward["agent"][0, 0] == 0.0, "commnet: a win with no enemy hit points left costs nothing"
    assert out.final_obs["agent"][0, 0, 1 + 4 + 0] == 0.0, "dead enemy no longer visible"


def test_mutual_attacks_resolve_simultaneously():
    env = make(n_agents=1, n_enemies=1)
    place(env, [(7, 7), (8, 8)], hp=[1, 1])
    out = env.step(act(env, ATTACK + 0))  # both shoot in the same step and both die: a draw
    assert out.terminated[0] and out.info["draw"][0] == 1.0 and out.info["win"][0] == 0.0
    assert out.reward["agent"][0, 0] == pytest.approx(-1.0)
    assert not out.final_obs["agent"][0].any(), "a dead agent observes zeros"


def test_illegal_attacks_are_noops_without_cooldown():
    env = make(n_agents=1, n_enemies=2)
    place(env, [(7, 7), (7, 9), (6, 6)], hp=[3, 3, 0], cd=[0, 99, 99])  # bot 0 out of range, bot 1 dead
    assert env.action_mask()["agent"][0, 0, ATTACK:].tolist() == [False, False]
    env.step(act(env, ATTACK + 0))
    env.step(act(env, ATTACK + 1))
    s = env.get_state()
    assert s["hp"][0].tolist() == [3, 3, 0] and s["cd"][0, 0] == 0


def test_visibility_in_observations():
    env = make(n_agents=1, n_enemies=2)
    place(env, [(7, 7), (6, 8), (5, 7)], cd=[0, 99, 99])
    o = env.observe()["agent"][0, 0]
    e0, e1 = o[1 + 4 : 1 + 4 + 5], o[1 + 4 + 5 : 1 + 4 + 10]
    assert e0.tolist() == [1.0, -1.0, 1.0, 1.0, 1.0]  # visible, drow, dcol, hp, attackable
    assert e1.tolist() == [0.0] * 5  # two rows away: not seen with visibility 1
    env = make(n_agents=1, n_enemies=2, visibility=2)
    place(env, [(7, 7), (6, 8), (5, 7)], cd=[0, 99, 99])
    o = env.observe()["agent"][0, 0]
    assert o[1 + 4 + 5 : 1 + 4 + 10].tolist() == [1.0, -1.0, 0.0, 1.0, 0.0]  # seen, out of range, /V=2


def test_bot_attacks_the_nearest_enemy_in_range():
    env = make(n_agents=2, n_enemies=1, attack_range=2)
    place(env, [(5, 7), (6, 7), (7, 7)])  # agent 0 at distance 2, agent 1 at distance 1
    env.step(act(env, NOOP, NOOP))
    assert env.get_state()["hp"][0].tolist() == [3, 2, 3]


def test_bot_approaches_a_visible_enemy_and_stays_without_one():
    env = make(n_agents=1, n_enemies=1, visibility=3)
    place(env, [(4, 7), (7, 7)])  # straight above, distance 3: a vertical step
    env.step(act(env, NOOP))
    assert env.get_state()["pos"][0, 1].tolist() == [6, 7]
    env = make(num_envs=50, n_agents=1, n_enemies=1, visibility=1)
    place(env, [(4, 7), (7, 7)])  # not visible: CommNet's bot stays
    env.step(act(env, NOOP))
    assert (env.get_state()["pos"][:, 1] == torch.tensor([7, 7])).all()
    env = make(num_envs=50, n_agents=1, n_enemies=1, visibility=1, bot_idle="wander")
    place(env, [(4, 7), (7, 7)])
    env.step(act(env, NOOP))
    steps = (env.get_state()["pos"][:, 1] - torch.tensor([7, 7])).abs().sum(-1)
    assert (steps == 1).all(), "a wandering bot takes one step"


def test_bot_axis_choice_probability():
    B = 3000
    env = make(num_envs=B, seed=4, n_agents=1, n_enemies=1, visibility=3)
    place(env, [(5, 8), (7, 7)])  # d = 2, |dcol| = 1: column step with probability 1/2
    env.step(act(env, NOOP))
    p = env.get_state()["pos"][:, 1]
    horizontal = (p == torch.tensor([7, 8])).all(-1).float()
    vertical = (p == torch.tensor([6, 7])).all(-1).float()
    assert (horizontal + vertical == 1).all()
    assert abs(horizontal.mean().item() - 0.5) < 4 * math.sqrt(0.25 / B)


def test_shared_bot_vision():
    pos = [(2, 2), (3, 3), (9, 2)]  # bot 0 next to the agent, bot 1 seven rows below
    env = make(n_agents=1, n_enemies=2)
    place(env, pos, cd=[0, 99, 0])
    env.step(act(env, NOOP))
    assert env.get_state()["pos"][0, 2].tolist() == [8, 2], "bot 1 sees through bot 0 and approaches"
    env = make(n_agents=1, n_enemies=2, bot_shared_vision=False)
    place(env, pos, cd=[0, 99, 0])
    env.step(act(env, NOOP))
    assert env.get_state()["pos"][0, 2].tolist() == [9, 2], "without shared vision bot 1 stays"


def test_moves_blocking_and_contests():
    env = make(n_agents=2, n_enemies=1)
    place(env, [(0, 0), (0, 1), (14, 14)])
    assert env.action_mask()["agent"][0, 0].tolist()[:5] == [True, False, True, False, False]  # up/left off-grid, right occupied
    env.step(act(env, UP, RIGHT))  # off the grid: stays; agent 1 moves right
    assert env.get_state()["pos"][0, :2].tolist() == [[0, 0], [0, 2]]
    env.step(act(env, RIGHT, NOOP))
    env.step(act(env, RIGHT, NOOP))  # into the occupied cell (0, 2): stays
    assert env.get_state()["pos"][0, 0].tolist() == [0, 1]
    B = 400
    env = make(num_envs=B, seed=2, n_agents=2, n_enemies=1)
    place(env, [(5, 5), (5, 7), (14, 14)])
    env.step(act(env, RIGHT, LEFT))  # both want (5, 6): exactly one gets it, each about half the time
    p = env.get_state()["pos"][:, :2]
    won0 = (p[:, 0] == torch.tensor([5, 6])).all(-1)
    won1 = (p[:, 1] == torch.tensor([5, 6])).all(-1)
    assert (won0 ^ won1).all()
    assert 0.35 < won0.float().mean().item() < 0.65


def test_action_mask():
    env = make(n_agents=2, n_enemies=2)
    place(env, [(7, 7), (3, 3), (8, 8), (7, 9)], hp=[3, 0, 3, 3], cd=[0, 0, 0, 0])
    m = env.action_mask()["agent"][0]
    assert m[0].tolist() == [True, True, True, True, True, True, False]  # attack bot 0 (diagonal), not bot 1 (2 cols away)
    assert m[1].tolist() == [True] + [False] * 6, "a dead agent may only no-op"
    assert (random_actions(env)["agent"][0, 1] == NOOP).all()


def test_terminal_rewards_commnet():
    env = make(max_steps=1)
    far = [(0, 0), (0, 2), (0, 4), (0, 6), (0, 8), (14, 0), (14, 2), (14, 4), (14, 6), (14, 8)]
    place(env, far)
    out = env.step(act(env, *[NOOP] * 5))  # timeout: a draw, 15 enemy hit points left
    assert out.truncated[0] and out.info["draw"][0] == 1.0
    assert torch.allclose(out.reward["agent"][0], torch.full((5,), -1.0 - 0.1 * 15))
    assert out.info["terminal_reward"][0] == pytest.approx(-2.5)
    env = make(n_agents=1, n_enemies=1)
    place(env, [(7, 7), (7, 8)], hp=[1, 2])
    out = env.step(act(env, NOOP))  # the bot kills the agent: a loss
    assert out.terminated[0] and out.info["win"][0] == 0.0 and out.info["draw"][0] == 0.0
    assert out.reward["agent"][0, 0] == pytest.approx(-1.0 - 0.1 * 2)


def test_ms_marl_rewards():
    env = make(n_agents=2, n_enemies=2, reward="ms_marl")
    place(env, [(7, 7), (0, 14), (7, 8), (14, 0)], hp=[3, 3, 1, 3], cd=[0, 0, 99, 99])
    out = env.step(act(env, ATTACK + 0, NOOP))
    # agent 0 kills the enemy beside it: one enemy fewer within radius 7 -> +1; agent 1 is far from it
    assert out.reward["agent"][0].tolist() == [1.0, 0.0]
    # a win adds MS-MARL's terminal reward 1 to the step reward
    env = make(n_agents=1, n_enemies=1, reward="ms_marl")
    place(env, [(7, 7), (7, 8)], hp=[3, 1], cd=[0, 99])
    out = env.step(act(env, ATTACK + 0))
    assert out.info["win"][0] == 1.0 and out.reward["agent"][0, 0] == pytest.approx(1.0 + 1.0)


def test_dead_units_receive_the_team_terminal_reward():
    """The terminal reward is the team's (CommNet; MS-MARL Algorithm 1 adds it to every R_i)."""
    for reward, expected in (("commnet", -1.0 - 0.1 * 6), ("ms_marl", -0.2)):
        env = make(n_agents=2, n_enemies=2, max_steps=2, reward=reward)
        # agent 1 is already dead (hp 0); the others stand far apart until the timeout
        place(env, [(0, 0), (0, 2), (14, 14), (14, 12)], hp=[3, 0, 3, 3], cd=[0, 0, 99, 99])
        assert not env.alive()["agent"][0, 1]
        out = env.step(act(env, NOOP, NOOP))
        assert out.reward["agent"][0, 1] == 0.0, "no step reward for a dead unit"
        out = env.step(act(env, NOOP, NOOP))
        assert out.truncated[0]
        assert out.reward["agent"][0].tolist() == pytest.approx([expected, expected]), reward


def test_attack_nearest_beats_random_play():
    B = 256
    wins = {}
    for name in ("nearest", "random"):
        env = make(num_envs=B, seed=11)
        finished = torch.zeros(B, dtype=torch.bool)
        won = torch.zeros(B)
        g = torch.Generator().manual_seed(0)
        for _ in range(env.spec.max_steps):
            a = attack_nearest(env) if name == "nearest" else random_actions(env, g)
            out = env.step(a)
            newly = out.done & ~finished
            won[newly] = out.info["win"][newly]
            finished |= out.done
        assert finished.all()
        wins[name] = won.mean().item()
    assert wins["nearest"] > wins["random"] + 0.1, wins


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"n_agents": 0}, "n_agents"),
        ({"dispersion": 1}, "dispersion"),
        ({"reward": "dense"}, "reward"),
        ({"bot_idle": "run"}, "bot_idle"),
        ({"visibilty": 2}, "visibilty"),
        ({"hp": 1.5}, "hp"),
    ],
)
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        maestro.make_env("combat", **kw)


def test_bad_actions_name_the_group():
    env = make(num_envs=2)
    with pytest.raises(ValueError, match="agent"):
        env.step({"agent": torch.zeros(2, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"agent.*\[0, 10\)"):
        env.step({"agent": torch.full((2, 5), 10)})
    with pytest.raises(ValueError, match="pos"):
        s = env.get_state()
        s["pos"][:] = 20
        env.set_state(s)


def test_render_draws_units():
    env = make(n_agents=1, n_enemies=1)
    place(env, [(7, 7), (7, 8)], cd=[0, 99])
    env.step(act(env, ATTACK + 0))
    img = env.render()
    assert img.shape == (15 * 24, 15 * 24, 3) and img.dtype.name == "uint8"
    blue = (img[..., 2] > 200) & (img[..., 0] < 80)
    red = (img[..., 0] > 200) & (img[..., 2] < 80)
    assert blue.any() and red.any()
