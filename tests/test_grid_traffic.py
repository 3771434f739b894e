"""Traffic junction: conformance, route geometry, exits, collisions, the entry process, the
curriculum, observations and bad input (hand-built situations through ``set_state``)."""

import math

import numpy as np
import pytest
import torch

import maestro
from maestro.envs.check import check_env
from maestro.envs.grid.traffic_junction import (
    BRAKE,
    GAS,
    TrafficJunctionConfig,
    _lanes,
    add_rate,
    always_gas,
    brake_if_occupied,
    build_layout,
    conflicts,
    reservation,
)


def make(num_envs=1, seed=0, **kw):
    env = maestro.make_env("traffic_junction", num_envs=num_envs, seed=seed, **kw)
    env.reset()
    return env


def place(env, cars, add_rate=0.0):
    """Put cars ``{slot: (route, pos, tau)}`` on every copy; no entries unless ``add_rate`` > 0."""
    s = env.get_state()
    s["on_grid"][:] = False
    for slot, (route, pos, tau) in cars.items():
        s["on_grid"][:, slot] = True
        s["route"][:, slot] = route
        s["pos"][:, slot] = pos
        s["tau"][:, slot] = tau
    s["add_rate"][:] = add_rate
    env.set_state(s)


def acts(env, *per_slot):
    a = torch.full((env.num_envs, env.params.n_cars), GAS, dtype=torch.long)
    for slot, v in per_slot:
        a[:, slot] = v
    return {"car": a}


def route_id(env, first, last):
    """The route starting at cell ``first`` and ending at ``last``."""
    for i, r in enumerate(env.layout.routes):
        if r[0] == first and r[-1] == last:
            return i
    raise AssertionError(f"no route {first} -> {last}")


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_check_env(difficulty):
    check_env("traffic_junction", difficulty=difficulty)


def test_check_env_first_turn_routes():
    check_env("traffic_junction", difficulty="hard", route_set="first_turn", max_steps=10, num_envs=3)


@pytest.mark.parametrize(
    "difficulty, dim, route_set, n_entries, per_entry",
    [("easy", 7, "all", 2, 1), ("medium", 14, "all", 4, 3), ("hard", 18, "all", 8, 7),
     ("hard", 18, "first_turn", 8, 3), ("medium", 10, "all", 4, 3), ("hard", 9, "all", 8, 7)],
)
def test_route_geometry(difficulty, dim, route_set, n_entries, per_entry):
    lay = build_layout(difficulty, dim, route_set)
    assert lay.entry_routes.shape == (n_entries, per_entry)
    vert, horiz = _lanes(difficulty, dim)
    col_heading = dict(vert)
    row_heading = dict(horiz)
    step_name = {(1, 0): "S", (-1, 0): "N", (0, 1): "E", (0, -1): "W"}
    for e, (r0, c0, _) in enumerate(lay.entries):
        ends = set()
        for rid in lay.entry_routes[e]:
            route = lay.routes[rid]
            assert route[0] == (r0, c0)
            assert len(set(route)) == len(route), "a route visits a cell twice"
            assert all(lay.road[r, c] for r, c in route), "a route leaves the road"
            for (ra, ca), (rb, cb) in zip(route, route[1:]):
                h = step_name[(rb - ra, cb - ca)]  # unit steps only (KeyError otherwise)
                # keep right: the lane of the destination cell carries this heading
                lane_ok = (h in "NS" and col_heading.get(cb) == h) or (h in "EW" and row_heading.get(rb) == h)
                assert lane_ok, f"route {rid} drives {h} into ({rb},{cb}) against the lane"
            r, c = route[-1]
            assert r in (0, dim - 1) or c in (0, dim - 1), "a route must end on the grid edge"
            ends.add(route[-1])
        assert len(ends) == per_entry, "routes of one entry must lead to distinct exits"


def test_hard_routes_match_commnet_lengths():
    # CommNet CrossingHard.lua, source (1, 5) (1-indexed) = (0, 4): its seven routes' cell counts
    lay = build_layout("hard", 18, "all")
    e = [i for i, (r, c, _) in enumerate(lay.entries) if (r, c) == (0, 4)][0]
    assert sorted(len(lay.routes[i]) for i in lay.entry_routes[e]) == [9, 17, 18, 19, 20, 26, 27]


def test_easy_routes_are_ic3net_straight_lines():
    lay = build_layout("easy", 7, "all")
    assert lay.routes[0] == tuple((i, 3) for i in range(7))
    assert lay.routes[1] == tuple((3, i) for i in range(7))


def test_gas_brake_ageing_and_exit():
    env = make(difficulty="easy")
    top = route_id(env, (0, 3), (6, 3))
    place(env, {0: (top, 5, 4), 1: (top, 1, 2)})
    out = env.step(acts(env, (1, BRAKE)))
    s = env.get_state()
    assert s["pos"][0].tolist()[:2] == [6, 1], "gas advances one cell, brake stays"
    assert s["tau"][0].tolist()[:2] == [5, 3], "every car on the grid ages"
    assert torch.allclose(out.reward["car"][0, :2], torch.tensor([-0.05, -0.03]))
    out = env.step(acts(env, (1, BRAKE)))  # car 0 drives past its last cell and leaves
    assert out.alive["car"][0].tolist()[:2] == [False, True]
    assert out.reward["car"][0, 0] == 0.0, "a car that left gets no reward"
    assert out.info["exited"][0] == 1.0
    assert (out.obs["car"][0, 0] == 0).all(), "a free slot observes zeros"
    assert out.state[0].sum() == 1.0


def test_collision_exactly_when_two_cars_share_a_cell():
    env = make(difficulty="easy")
    top, left = route_id(env, (0, 3), (6, 3)), route_id(env, (3, 0), (3, 6))
    # both cars one cell away from the crossing (3, 3)
    place(env, {0: (top, 2, 2), 1: (left, 2, 2)})
    snap = env.get_state()
    out = env.step(acts(env, (0, BRAKE)))  # only one moves: no collision
    assert out.info["success"][0] == 1.0 and out.info["collisions"][0] == 0.0
    assert torch.allclose(out.reward["car"][0, :2], torch.tensor([-0.03, -0.03]))
    env.set_state(snap)
    out = env.step(acts(env))  # both move into (3, 3)
    assert torch.allclose(out.reward["car"][0, :2], torch.tensor([-10.03, -10.03]))
    assert out.info["success"][0] == 0.0 and out.info["collisions"][0] == 1.0
    assert out.state[0, 3 * 7 + 3] == 2.0
    out = env.step(acts(env, (0, BRAKE), (1, BRAKE)))  # still together: penalised again
    assert out.info["collisions"][0] == 2.0 and out.reward["car"][0, 0] < -10
    out = env.step(acts(env, (1, BRAKE)))  # separated; success stays 0 for the episode
    assert out.info["success"][0] == 0.0 and out.reward["car"][0, 0] > -1


def test_rear_end_collision_on_one_route():
    env = make(difficulty="medium")
    r = env.layout.entry_routes[0, 0]
    place(env, {3: (r, 4, 4), 7: (r, 3, 3)})
    out = env.step(acts(env))  # both drive: no collision
    assert out.info["collisions"][0] == 0.0
    out = env.step(acts(env, (3, BRAKE)))  # the car behind drives into the braking one
    assert out.info["collisions"][0] == 1.0
    assert out.reward["car"][0, 3] < -10 and out.reward["car"][0, 7] < -10


def test_conflicts_name_the_cause_of_each_collision_cell():
    env = make(difficulty="easy")
    top, left = route_id(env, (0, 3), (6, 3)), route_id(env, (3, 0), (3, 6))
    zero = {"crossing": 0, "rear_end": 0, "shared": 0}
    # two streams meet in the crossing (3, 3)
    place(env, {0: (top, 2, 2), 1: (left, 2, 2)})
    assert {k: int(v[0]) for k, v in conflicts(env, acts(env)).items()} == {**zero, "crossing": 1}
    assert {k: int(v[0]) for k, v in conflicts(env, acts(env, (0, BRAKE))).items()} == zero
    out = env.step(acts(env))
    assert out.info["collisions"][0] == 1.0
    # now they share (3, 3): braking together or driving on together is the same collision going on
    assert {k: int(v[0]) for k, v in conflicts(env, acts(env, (0, BRAKE), (1, BRAKE))).items()} == {**zero, "shared": 1}
    # a car runs into one that brakes on its route, while another pair crosses elsewhere
    env = make(difficulty="medium")
    r = env.layout.entry_routes[0, 0]
    place(env, {3: (r, 4, 4), 7: (r, 3, 3)})
    assert {k: int(v[0]) for k, v in conflicts(env, acts(env, (3, BRAKE))).items()} == {**zero, "rear_end": 1}
    assert {k: int(v[0]) for k, v in conflicts(env, acts(env)).items()} == zero
    with pytest.raises(ValueError, match="'car'.*expected"):
        conflicts(env, {"car": torch.zeros(1, 3, dtype=torch.long)})


def test_conflicts_account_for_every_collision_but_the_entries():
    # random driving on the hard junction: without entries the causes add up to the env's count;
    # with entries the env counts at least as many (a new car landing on a waiting one)
    for rate in (0.0, 0.05):
        env = make(num_envs=128, seed=5, difficulty="hard", initial_progress=1.0)
        if rate == 0.0:
            env.reset()
            for _ in range(15):  # fill the grid, then stop the entries
                env.step({"car": (torch.rand(128, env.params.n_cars) < 0.2).long()})
            s = env.get_state()
            s["add_rate"][:] = 0.0
            env.set_state(s)
        gen = torch.Generator().manual_seed(0)
        seen = 0
        for _ in range(20):
            before = env.get_state()["n_collisions"].clone()
            a = {"car": (torch.rand(128, env.params.n_cars, generator=gen) < 0.3).long()}
            kinds = conflicts(env, a)
            explained = sum(kinds.values())
            out = env.step(a)
            delta = env.get_state()["n_collisions"] - before
            live = ~out.done  # a finished copy was reset: its count restarted
            if rate == 0.0:
                assert torch.equal(explained[live], delta[live])
            else:
                assert (explained[live] <= delta[live]).all()
            seen += int(explained[live].sum())
        assert seen > 20  # the situation was exercised


def test_entry_rate_matches_add_rate():
    B, p = 4000, 0.3
    env = make(num_envs=B, seed=1, difficulty="medium", n_cars=20)
    s = env.get_state()
    s["add_rate"][:] = p
    env.set_state(s)
    out = env.step(acts(env))
    entered = out.alive["car"].sum(1).float()  # 4 entries, never capped with 20 slots
    mean, sd = 4 * p, math.sqrt(4 * p * (1 - p) / B)
    assert abs(entered.mean().item() - mean) < 4 * sd
    # each entry point separately, and the route choice uniform among that entry's routes
    s = env.get_state()
    first = torch.tensor([env.layout.routes[i][0][0] * env.params.dim + env.layout.routes[i][0][1] for i in range(env.n_routes)])
    routes = s["route"][s["on_grid"]]
    counts = torch.bincount(routes, minlength=env.n_routes).float()
    for e in range(env.n_entries):
        ids = torch.as_tensor(env.layout.entry_routes[e])
        n_e = counts[ids].sum().item()
        assert abs(n_e / B - p) < 4 * math.sqrt(p * (1 - p) / B), f"entry {e}"
        chi2 = (((counts[ids] - n_e / 3) ** 2) / (n_e / 3)).sum().item()
        assert chi2 < 13.8, f"route choice of entry {e} not uniform (chi2={chi2:.1f}, 2 dof)"
    assert len(set(first.tolist())) == env.n_entries
    # a car starts on its route's first cell with tau 0
    assert (s["pos"][s["on_grid"]] == 0).all() and (s["tau"][s["on_grid"]] == 0).all()


def test_entries_stop_at_the_car_limit_and_use_free_slots():
    B = 500
    env = make(num_envs=B, seed=2, difficulty="hard", n_cars=3)
    s = env.get_state()
    s["add_rate"][:] = 1.0
    env.set_state(s)
    out = env.step(acts(env))
    assert (out.alive["car"].sum(1) == 3).all(), "exactly n_cars cars, never more"
    s = env.get_state()
    ent = torch.as_tensor(env.layout.entry_routes)
    entry_of = torch.zeros(env.n_routes, dtype=torch.long)
    for e in range(env.n_entries):
        entry_of[ent[e]] = e
    # entries are served in IC3Net's order: the first three entry points of it got the cars
    assert set(entry_of[s["route"]].flatten().tolist()) == set(env.layout.service_order[:3].tolist())
    # the first entry's car lands in a uniformly random slot
    slot_of_first = (entry_of[s["route"]] == 0).float().argmax(1)
    freq = torch.bincount(slot_of_first, minlength=3).float() / B
    assert (freq - 1 / 3).abs().max() < 0.08


@pytest.mark.parametrize(
    "difficulty, dim, first_cells",
    [  # IC3Net's arrival points in the order _add_cars walks them (_set_paths_easy, get_add_mat)
        ("easy", 7, [(0, 3), (3, 0)]),
        ("medium", 14, [(0, 6), (13, 7), (7, 0), (6, 13)]),
        ("hard", 18, [(0, 4), (0, 12), (5, 0), (13, 0), (17, 5), (17, 13), (4, 17), (12, 17)]),
    ],
)
def test_entries_are_drawn_in_ic3net_order(difficulty, dim, first_cells):
    lay = build_layout(difficulty, dim)
    assert [lay.entries[e][:2] for e in lay.service_order] == first_cells


def test_slot_reuse_rules_where_a_car_leaves_while_two_are_due():
    """Easy junction, 3 slots: slot 0's car drives off its route's end, slot 1's drives on, slot 2
    is free; both entries admit a car (add rate 1). IC3Net (``same_step``, the default): two free
    slots after the moves, so both enter, entry 0 into slot 2 (free before the step), entry 1 into
    slot 0 (just freed). ``next_step``: slot 0 stays closed for this step, only entry 0's car enters."""
    expected = {
        # rule: (alive, route, pos, tau) of the slots after the step, cars through
        "same_step": ([True, True, True], [1, 0, 0], [0, 4, 0], [0, 6, 0]),
        "next_step": ([False, True, True], [1, 0, 0], [7, 4, 0], [7, 6, 0]),
    }
    for rule, (alive, route, pos, tau) in expected.items():
        env = make(num_envs=2, difficulty="easy", n_cars=3, slot_reuse=rule)
        top, left = route_id(env, (0, 3), (6, 3)), route_id(env, (3, 0), (3, 6))
        assert (top, left) == (0, 1) and env.layout.entry_routes.tolist() == [[top], [left]]
        place(env, {0: (left, 6, 6), 1: (top, 3, 5)}, add_rate=1.0)
        out = env.step(acts(env))
        s = env.get_state()
        assert out.alive["car"].tolist() == [alive] * 2, rule
        assert s["route"].tolist() == [route] * 2 and s["pos"].tolist() == [pos] * 2 and s["tau"].tolist() == [tau] * 2, rule
        assert out.info["completed"].tolist() == [[True, False, False]] * 2, rule
        assert out.info["exited"].tolist() == [1.0, 1.0] and out.info["success"].tolist() == [1.0, 1.0]
        assert torch.allclose(out.reward["car"], torch.tensor([[0.0, -0.06, 0.0]] * 2)), rule
        # next step: under next_step the freed slot now takes entry 0's car (1 slot free, 2 due)
        out = env.step(acts(env))
        assert out.alive["car"].tolist() == [[True, True, True]] * 2, rule


def test_a_freed_slot_waits_a_step_only_under_next_step():
    """One slot, a car due every step: under ``next_step`` the slot's alive flag drops for a step
    after each exit (a learner resets its hidden state there); under ``same_step`` (IC3Net) the
    next car takes the slot at once and ``info["completed"]`` marks each change of car."""
    for rule in ("next_step", "same_step"):
        env = make(num_envs=4, seed=3, difficulty="easy", n_cars=1, max_steps=200, slot_reuse=rule)
        s = env.get_state()
        s["add_rate"][:] = 1.0
        env.set_state(s)
        alive, completed = [], []
        for _ in range(60):
            out = env.step(acts(env))
            alive.append(out.alive["car"][:, 0])
            completed.append(out.info["completed"][:, 0])
        alive, completed = torch.stack(alive), torch.stack(completed)  # (T, B)
        exits = out.info["exited"]
        assert (exits >= 2).all(), "cars must have left and re-entered during the test"
        assert torch.equal(completed.sum(0).float(), exits)
        drops = (alive[:-1] & ~alive[1:]).sum(0).float()
        if rule == "next_step":
            assert torch.equal(drops, exits)  # every exit shows as a drop
            assert (exits == 7).all()  # a 7-cell route: exits at steps 8, 16, ..., 56 (a step's wait each)
        else:
            assert (drops == 0).all() and alive.all()
            assert (exits == 8).all()  # exits at steps 8, 15, ..., 57: no wait


def test_slot_reuse_rules_agree_where_the_car_limit_does_not_bind():
    """Hard junction under always-gas: where the limit of 20 cars does not bind (here in all 64
    copies; it binds in about 1 episode in 1300), the two rules give the same trajectories, step by
    step (MS-MARL Table 1's task is all but unchanged by the default: docs/traffic_junction.md)."""
    envs = [make(num_envs=64, seed=5, difficulty="hard", slot_reuse=rule) for rule in ("same_step", "next_step")]
    for _ in range(40):
        outs = [e.step(always_gas(e)) for e in envs]
        a, b = (e.get_state() for e in envs)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(outs[0].reward["car"], outs[1].reward["car"])
    assert outs[0].done.all() and outs[0].info["exited"].sum() > 0


def test_curriculum_schedule():
    cfg = TrafficJunctionConfig(difficulty="easy", curriculum_start=0.2, curriculum_end=0.6)
    assert add_rate(0.0, cfg) == pytest.approx(0.1)
    assert add_rate(0.2, cfg) == pytest.approx(0.1)
    assert add_rate(0.4, cfg) == pytest.approx(0.2)
    assert add_rate(0.6, cfg) == pytest.approx(0.3)
    assert add_rate(1.0, cfg) == pytest.approx(0.3)
    xs = np.linspace(0, 1, 41)
    ys = [add_rate(x, cfg) for x in xs]
    assert all(b >= a for a, b in zip(ys, ys[1:]))
    step = TrafficJunctionConfig(difficulty="hard", curriculum_start=0.5, curriculum_end=0.5)
    assert add_rate(0.49, step) == pytest.approx(0.02) and add_rate(0.5, step) == pytest.approx(0.05)
    env = make(num_envs=2, difficulty="easy", curriculum_start=0.2, curriculum_end=0.6, initial_progress=0.0)
    assert env.get_state()["add_rate"].tolist() == pytest.approx([0.1, 0.1])
    assert env.set_progress(0.4) == pytest.approx(0.2)
    assert env.step(acts(env)).info["add_rate"].tolist() == pytest.approx([0.2, 0.2])
    with pytest.raises(ValueError, match="progress"):
        env.set_progress(1.5)


def test_observation_layout():
    env = make(num_envs=2, difficulty="medium")
    p, D = env.params, env.params.dim
    r = env.layout.entry_routes[0, 0]  # southbound straight down column 6
    place(env, {2: (r, 5, 3), 4: (r, 6, 2)})  # (5, 6) and (6, 6) (a junction cell)
    obs = env.observe()["car"][0]
    N, R, NR = p.n_cars, env.n_routes, env.n_road
    assert obs.shape[0] == N and obs.shape[1] == N + R + NR + 2 * 9
    o = obs[2]
    assert o[:N].tolist() == [1.0 if i == 2 else 0.0 for i in range(N)]
    assert o[N + r] == 1 and o[N : N + R].sum() == 1
    road_ids = np.cumsum(env.layout.road.reshape(-1)) - 1
    assert o[N + R + road_ids[5 * D + 6]] == 1 and o[N + R : N + R + NR].sum() == 1
    road_win = o[N + R + NR : N + R + NR + 9].view(3, 3)
    cars_win = o[N + R + NR + 9 :].view(3, 3)
    assert road_win.tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 1]]  # column 5 is grass above row 6
    assert cars_win.tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0]], "the car ahead below, itself not counted"
    for i in range(N):
        if i not in (2, 4):
            assert (obs[i] == 0).all()
    assert env.state()[0].sum() == 2 and env.state()[0, 5 * D + 6] == 1


def test_commnet_observation_shows_the_routes_and_slots_of_the_cars_in_view():
    base = make(num_envs=2, difficulty="easy", vision=1)
    env = make(num_envs=2, difficulty="easy", vision=1, observation="commnet")
    top, left = route_id(env, (0, 3), (6, 3)), route_id(env, (3, 0), (3, 6))
    # slots 0 and 1 diagonal to each other next to the crossing; slot 3 far up the left road
    cars = {0: (top, 2, 2), 1: (left, 2, 2), 3: (left, 0, 1)}
    place(base, cars)
    place(env, cars)
    N, R = env.params.n_cars, env.n_routes
    o, o_base = env.observe()["car"][0], base.observe()["car"][0]
    d = o_base.shape[1]
    assert o.shape[1] == d + R + N
    assert torch.equal(o[:, :d], o_base)  # the IC3Net part is unchanged
    routes, slots = o[:, d : d + R], o[:, d + R :]
    assert routes[0].tolist() == [1.0 if k == left else 0.0 for k in range(R)]  # car 0 sees car 1's route
    assert routes[1].tolist() == [1.0 if k == top else 0.0 for k in range(R)]
    assert slots[0].tolist() == [1.0 if i == 1 else 0.0 for i in range(N)]
    assert slots[1].tolist() == [1.0 if i == 0 else 0.0 for i in range(N)]
    assert (o[3, d:] == 0).all(), "nobody within one cell of car 3"
    assert (o[2] == 0).all() and (o[4] == 0).all(), "free slots observe zeros"
    place(env, {0: (top, 2, 2), 1: (left, 2, 2), 2: (left, 2, 2)})  # two cars on one route in view
    assert env.observe()["car"][0, 0, d + left] == 2.0
    check_env("traffic_junction", difficulty="hard", observation="commnet", max_steps=10, num_envs=3)
    with pytest.raises(ValueError, match="'observation'"):
        maestro.make_env("traffic_junction", observation="mazebase")


def test_vision_zero_window_is_the_own_cell():
    env = make(difficulty="easy")
    assert env.spec.groups["car"].obs_shape == (5 + 2 + 13 + 2,)


def test_scripted_policies():
    env = make(difficulty="easy")
    top = route_id(env, (0, 3), (6, 3))
    place(env, {0: (top, 2, 1), 1: (top, 3, 1), 2: (top, 5, 1)})
    a = brake_if_occupied(env)["car"][0]
    assert a[:3].tolist() == [BRAKE, GAS, GAS]
    assert (always_gas(env)["car"] == GAS).all()
    # brake_if_occupied avoids the rear-end collision that always_gas makes
    env.step(brake_if_occupied(env))
    assert env.get_state()["n_collisions"][0] == 0


def test_reservation_resolves_a_junction_conflict_by_hand():
    env = make(difficulty="easy")
    top, left = route_id(env, (0, 3), (6, 3)), route_id(env, (3, 0), (3, 6))
    # slot 0 (top, older) and slot 1 (left) both want the junction (3, 3); slot 2 queues behind slot 1
    place(env, {0: (top, 2, 5), 1: (left, 2, 3), 2: (left, 1, 2)})
    assert reservation(env)["car"][0, :3].tolist() == [GAS, BRAKE, BRAKE]
    place(env, {0: (top, 2, 3), 1: (left, 2, 5), 2: (left, 1, 2)})  # now the left car is older
    assert reservation(env)["car"][0, :3].tolist() == [BRAKE, GAS, GAS]
    env.step(reservation(env))
    assert env.get_state()["n_collisions"][0] == 0


def test_reservation_never_collides_on_the_hard_junction():
    # an upper bound for learners: the hard junction is solvable (success 1.0) by a central planner
    env = make(num_envs=256, seed=3, difficulty="hard", initial_progress=1.0)
    env.reset()
    for _ in range(env.params.max_steps):
        out = env.step(reservation(env))
    assert out.done.all()
    assert out.info["success"].min().item() == 1.0
    assert out.info["exited"].mean().item() > 5.0  # and cars do get through


def test_always_gas_success_rate_matches_the_analytic_value():
    # easy, no car cap: two straight routes cross at (3, 3), reached 3 steps after entry; with
    # always-gas a collision happens iff both entries admit a car in the same step s <= T - 3,
    # so P(success) = (1 - p^2)^(T - 3).
    B, p, T = 4000, 0.3, 20
    env = make(num_envs=B, seed=7, difficulty="easy", n_cars=20, max_steps=T)
    for _ in range(T):
        out = env.step(always_gas(env))
    assert out.done.all()
    expected = (1 - p * p) ** (T - 3)
    got = out.info["success"].mean().item()
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / B), (got, expected)


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"difficulty": "expert"}, "difficulty"),
        ({"difficulty": "hard", "dim": 8}, "dim"),
        ({"difficulty": "medium", "dim": 3}, "dim"),
        ({"n_cars": 0}, "n_cars"),
        ({"vision": -1}, "vision"),
        ({"add_rate_max": 1.5}, "add_rate_max"),
        ({"curriculum_start": 0.8, "curriculum_end": 0.2}, "curriculum_end"),
        ({"route_set": "some"}, "route_set"),
        ({"slot_reuse": "later"}, "slot_reuse"),
        ({"n_carz": 3}, "n_carz"),
    ],
)
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        maestro.make_env("traffic_junction", **kw)


def test_bad_actions_name_the_group():
    env = make(num_envs=2, difficulty="easy")
    with pytest.raises(ValueError, match="car"):
        env.step({"car": torch.zeros(2, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"car.*\[0, 2\)"):
        env.step({"car": torch.full((2, 5), 2)})
    with pytest.raises(ValueError, match="route"):
        s = env.get_state()
        s["route"][:] = 99
        env.set_state(s)
