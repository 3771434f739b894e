"""PettingZoo interoperation: maestro env -> ParallelEnv (PettingZoo's own API/seed tests) and
ParallelEnv -> maestro env (check_env, parity with stepping MPE2 directly, round trips)."""

import copy
import functools
import pickle
import warnings

import cloudpickle
import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test, parallel_seed_test

import maestro
from maestro.envs import pettingzoo as mpz
from maestro.envs.api import random_actions
from maestro.envs.check import check_env
from maestro.envs.pettingzoo import from_parallel_env, to_parallel_env
from toy_env import ToyConfig, ToyEnv

mpe2 = pytest.importorskip("mpe2")
from mpe2 import simple_spread_v3, simple_tag_v3  # noqa: E402

PARTICLE = [
    ("simple_spread", {}),
    ("simple_spread", {"continuous_actions": True}),
    ("simple_tag", {}),
    ("simple_tag", {"continuous_actions": True}),
]
MPE2_FACTORIES = {
    "spread": functools.partial(simple_spread_v3.parallel_env, render_mode="rgb_array"),
    "tag_continuous": functools.partial(simple_tag_v3.parallel_env, continuous_actions=True, render_mode="rgb_array"),
}


def _need(name):
    if name not in maestro.env_names():
        pytest.skip(f"maestro env {name!r} is not registered yet (src/maestro/envs/particle/ is being written)")


class AbsentToy(ToyEnv):
    """Toy env where walker 1 is only present on even steps (a car entering and leaving)."""

    def _alive(self):
        alive = super()._alive()
        alive["walker"][:, 1] = self._t % 2 == 0
        return alive

    def _observe(self):
        obs = super()._observe()
        obs["walker"] = obs["walker"] * self._alive()["walker"][..., None]
        return obs


def toy_parallel(cls=ToyEnv, seed=0):
    return to_parallel_env(cls(ToyConfig(), num_envs=1, seed=seed), render_mode="rgb_array")


# ------------------------------------------------------------------ maestro -> PettingZoo
@pytest.mark.parametrize("cls", [ToyEnv, AbsentToy])
def test_toy_passes_pettingzoo_tests(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports soft failures as warnings
        parallel_api_test(toy_parallel(cls), num_cycles=50)
    parallel_seed_test(lambda: toy_parallel(cls))


@pytest.mark.parametrize("name, kw", PARTICLE)
def test_particle_passes_pettingzoo_tests(name, kw):
    _need(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(to_parallel_env(name, seed=0, **kw), num_cycles=60)
    parallel_seed_test(lambda: to_parallel_env(name, seed=0, **kw))
    env = to_parallel_env(name, seed=0, render_mode="rgb_array", **kw)
    obs, _ = env.reset(seed=1)
    assert env.state().shape == env.state_space.shape
    for a in env.agents:
        assert env.observation_space(a).contains(obs[a]), a
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


@pytest.mark.parametrize("name", maestro.env_names())
def test_registered_envs_pass_pettingzoo_tests(name):
    """Every registered env (default config) is a valid PettingZoo env through to_parallel_env."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(to_parallel_env(name, seed=0), num_cycles=60)
    parallel_seed_test(lambda: to_parallel_env(name, seed=0))


def test_to_parallel_env_rejects_batches():
    with pytest.raises(ValueError, match="num_envs=3"):
        to_parallel_env(ToyEnv(ToyConfig(), num_envs=3))


def test_to_parallel_episode_semantics_follow_the_batched_env():
    """obs at the end = final_obs, agents emptied, reset() continues the batched env's stream."""
    ref = ToyEnv(ToyConfig(), num_envs=1, seed=4)
    ref_obs = ref.reset(seed=4)
    par = toy_parallel(seed=99)
    obs, infos = par.reset(seed=4)
    assert par.possible_agents == ["walker_0", "walker_1", "pusher_0"]
    assert np.array_equal(obs["walker_1"], ref_obs["walker"][0, 1].numpy())
    assert infos["walker_0"]["alive"] is True
    g = torch.Generator().manual_seed(0)
    episodes = 0
    for _ in range(20):
        a = random_actions(ref, g)
        out = ref.step(a)
        pa = {"walker_0": int(a["walker"][0, 0]), "walker_1": int(a["walker"][0, 1]), "pusher_0": a["pusher"][0, 0].numpy()}
        obs, rew, term, trunc, info = par.step(pa)
        assert np.array_equal(obs["pusher_0"], out.final_obs["pusher"][0, 0].numpy())
        assert rew["walker_1"] == pytest.approx(float(out.reward["walker"][0, 1]))
        assert all(v == bool(out.terminated[0]) for v in term.values())
        assert all(v == bool(out.truncated[0]) for v in trunc.values())
        assert np.allclose(par.state(), out.final_state[0].numpy())
        if bool(out.done[0]):
            episodes += 1
            assert par.agents == []
            assert info["walker_0"]["episode_length"] == int(out.info["episode_length"][0])
            with pytest.raises(RuntimeError, match="reset"):
                par.step({})
            obs, _ = par.reset()
            assert np.array_equal(obs["walker_0"], out.obs["walker"][0, 0].numpy())
        else:
            assert par.agents == par.possible_agents
    assert episodes >= 2


def test_to_parallel_absent_agents_stay_listed_with_alive_false():
    par = toy_parallel(AbsentToy)
    par.reset(seed=0)
    obs, rew, term, trunc, info = par.step({a: par.action_space(a).sample() for a in par.agents})
    assert par.agents == par.possible_agents  # t=1: walker_1 absent but still listed
    assert info["walker_1"]["alive"] is False and info["walker_0"]["alive"] is True
    assert not obs["walker_1"].any()
    with pytest.raises(ValueError, match="ghost"):
        par.step({"ghost_0": 0})
    for bad in ({"walker_0": 7.5}, {"walker_0": 3}, {"pusher_0": np.array([1.5], np.float32)}, {"pusher_0": np.zeros(2)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            par.step(bad)


# ------------------------------------------------------------------ PettingZoo -> maestro
def test_from_parallel_groups_and_shapes():
    env = from_parallel_env(MPE2_FACTORIES["tag_continuous"], num_envs=3, seed=0)
    spec = env.spec
    assert list(spec.groups) == ["adversary", "agent"]
    assert (spec.groups["adversary"].n_agents, spec.groups["agent"].n_agents) == (3, 1)
    assert spec.groups["adversary"].obs_shape == (16,) and spec.groups["agent"].obs_shape == (14,)
    assert not spec.discrete and spec.groups["agent"].action_dim == 5
    assert spec.max_steps == 25 and spec.state_shape == (62,)
    spread = from_parallel_env(simple_spread_v3.parallel_env, num_envs=2, seed=0)
    assert list(spread.spec.groups) == ["agent"] and spread.spec.groups["agent"].n_agents == 3
    assert spread.spec.discrete and spread.spec.groups["agent"].action_dim == 5
    obs = spread.reset()
    assert obs["agent"].shape == (2, 3, 18) and obs["agent"].dtype == torch.float32


@pytest.mark.parametrize("which", sorted(MPE2_FACTORIES))
def test_from_parallel_matches_pettingzoo_stepped_directly(which):
    """Same seeds, same actions: identical obs/rewards/ends/state, across auto-resets."""
    factory, B, seed = MPE2_FACTORIES[which], 3, 11
    env = from_parallel_env(factory, num_envs=B, seed=seed)
    refs = [factory() for _ in range(B)]
    ref_obs = [r.reset(seed=seed + i)[0] for i, r in enumerate(refs)]
    obs = env.reset()
    names = {g: [f"{g}_{j}" for j in range(gs.n_agents)] for g, gs in env.spec.groups.items()}

    def stacked(dicts):
        return {g: torch.tensor(np.stack([[d[a] for a in ns] for d in dicts])) for g, ns in names.items()}

    for g, x in stacked(ref_obs).items():
        assert torch.equal(obs[g], x)
    gen = torch.Generator().manual_seed(1)
    finished = 0
    for t in range(60):
        acts = random_actions(env, gen)
        out = env.step(acts)
        step = []
        for i, r in enumerate(refs):
            pa = {}
            for g, ns in names.items():
                for j, a in enumerate(ns):
                    pa[a] = int(acts[g][i, j]) if env.spec.groups[g].discrete else acts[g][i, j].numpy()
            step.append(r.step(pa))
        for g, x in stacked([s[0] for s in step]).items():
            assert torch.allclose(out.final_obs[g], x), f"final_obs[{g}] at step {t}"
        for g, x in stacked([s[1] for s in step]).items():
            assert torch.allclose(out.reward[g], x.float()), f"reward[{g}] at step {t}"
        trunc = torch.tensor([all(s[3].values()) for s in step])
        assert torch.equal(out.truncated, trunc) and not out.terminated.any()
        assert torch.allclose(out.final_state, torch.tensor(np.stack([r.state() for r in refs])))
        if out.done.any():
            finished += int(out.done.sum())
            assert (out.info["episode_length"][out.done] == 25).all()
            new = [r.reset()[0] if bool(out.done[i]) else step[i][0] for i, r in enumerate(refs)]
            for g, x in stacked(new).items():
                assert torch.allclose(out.obs[g], x), f"obs after auto-reset [{g}] at step {t}"
        for g, a in out.alive.items():
            assert a.all()
    assert finished == 2 * B


@pytest.mark.parametrize("which", sorted(MPE2_FACTORIES))
def test_from_parallel_passes_check_env(which):
    factory = MPE2_FACTORIES[which]
    check_env(lambda n, s: from_parallel_env(factory, n, s), num_envs=3, seed=2)


def test_snapshot_restores_repeatedly_and_expires(monkeypatch):
    env = from_parallel_env(simple_spread_v3.parallel_env, num_envs=2, seed=0)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        env.step(random_actions(env, gen))
    snap = env.get_state()
    a = random_actions(env, gen)
    first = env.step(a)
    for _ in range(2):
        env.set_state(snap)
        again = env.step(a)
        assert torch.equal(again.obs["agent"], first.obs["agent"]) and torch.equal(again.reward["agent"], first.reward["agent"])
    monkeypatch.setattr(mpz, "SNAPSHOT_CAPACITY", 2)
    env.get_state()
    env.get_state()  # evicts the tokens of `snap`
    with pytest.raises(ValueError, match="snapshot table"):
        env.set_state(snap)


def test_round_trip_agrees_with_the_original():
    """from_parallel_env(to_parallel_env(e)) replays e exactly, alive masks included."""
    for cls in (ToyEnv, AbsentToy):
        ref = cls(ToyConfig(), num_envs=1, seed=5)
        rt = from_parallel_env(lambda: toy_parallel(cls, seed=123), num_envs=1, seed=5)
        assert rt.spec.groups == ref.spec.groups and rt.spec.max_steps == ref.spec.max_steps
        o1, o2 = ref.reset(seed=5), rt.reset()
        assert all(torch.equal(o1[g], o2[g]) for g in o1)
        gen = torch.Generator().manual_seed(3)
        for t in range(25):
            a = random_actions(ref, gen)
            x, y = ref.step(a), rt.step(a)
            for f in ("obs", "final_obs", "reward", "alive"):
                for g in ref.spec.groups:
                    assert torch.allclose(getattr(x, f)[g], getattr(y, f)[g]), f"{cls.__name__}: {f}[{g}] at step {t}"
            for f in ("terminated", "truncated", "state", "final_state"):
                assert torch.equal(getattr(x, f), getattr(y, f)), f"{cls.__name__}: {f} at step {t}"
            assert torch.equal(x.info["episode_length"], y.info["episode_length"])
    check_env(lambda n, s: from_parallel_env(lambda: toy_parallel(AbsentToy), n, s), num_envs=3)


@pytest.mark.parametrize("name, kw", PARTICLE)
def test_particle_round_trip(name, kw):
    _need(name)
    ref = maestro.make_env(name, num_envs=1, seed=3, **kw)
    rt = from_parallel_env(lambda: to_parallel_env(name, seed=0, **kw), num_envs=1, seed=3)
    o1, o2 = ref.reset(seed=3), rt.reset()
    assert all(torch.equal(o1[g], o2[g]) for g in o1)
    gen = torch.Generator().manual_seed(0)
    for t in range(2 * ref.spec.max_steps + 2):
        a = random_actions(ref, gen)
        x, y = ref.step(a), rt.step(a)
        for g in ref.spec.groups:
            assert torch.allclose(x.obs[g], y.obs[g]) and torch.allclose(x.final_obs[g], y.final_obs[g]), f"{g} at step {t}"
            assert torch.allclose(x.reward[g], y.reward[g]), f"reward {g} at step {t}"
        assert torch.equal(x.done, y.done) and torch.allclose(x.state, y.state)


class _MaskedCounter(ParallelEnv):
    """Two agents with PettingZoo's action-masking observations: action ``(t + k) % 3`` is illegal
    for agent ``k`` at step ``t``; the reward is the action taken; agent 1 leaves after step 2."""

    metadata = {"name": "masked_counter"}

    def __init__(self, max_cycles=5):
        self.possible_agents = ["p_0", "p_1"]
        self.agents = []
        self.max_cycles = max_cycles
        self._obs_space = spaces.Dict({"observation": spaces.Box(0, 100, (2,), dtype=np.float32), "action_mask": spaces.Box(0, 1, (3,), dtype=np.int8)})

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return spaces.Discrete(3)

    def render(self):
        return np.zeros((4, 4, 3), np.uint8)

    def _obs(self):
        out = {}
        for a in self.agents:
            k = int(a[-1])
            mask = np.ones(3, np.int8)
            mask[(self.t + k) % 3] = 0
            out[a] = {"observation": np.array([self.t, k], np.float32), "action_mask": mask}
        return out

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        for a in self.agents:
            assert actions[a] != (self.t + int(a[-1])) % 3, f"{a} took a masked action"
        rew = {a: float(actions[a]) for a in self.agents}
        self.t += 1
        trunc = self.t >= self.max_cycles
        obs = self._obs()
        done = {a: trunc for a in self.agents}
        if self.t == 2 and "p_1" in self.agents:
            self.agents.remove("p_1")
        if trunc:
            self.agents = []
        return obs, rew, {a: False for a in done}, done, {a: {} for a in done}


def test_from_parallel_reads_action_masks_from_dict_observations():
    env = from_parallel_env(_MaskedCounter, num_envs=2, seed=0)
    assert env.spec.groups["p"].has_action_mask and env.spec.groups["p"].obs_shape == (2,)
    obs = env.reset()
    gen = torch.Generator().manual_seed(0)
    absent_seen = 0
    for _ in range(12):  # two episodes of 5 steps and more, through the auto-resets
        mask, alive = env.action_mask()["p"], env.alive()["p"]
        assert mask.shape == (2, 2, 3)
        t = obs["p"][:, 0, 0].long()  # (B,) the step each copy's observation was taken at
        for b in range(2):
            for k in range(2):
                expect = torch.ones(3, dtype=torch.bool)
                if bool(alive[b, k]):
                    expect[(int(t[b]) + k) % 3] = False
                else:
                    absent_seen += 1  # an absent agent: every action legal (and ignored)
                assert torch.equal(mask[b, k], expect), (b, k, mask[b, k])
        obs = env.step(random_actions(env, gen)).obs  # _MaskedCounter asserts that no masked action reaches it
    assert absent_seen > 0
    check_env(lambda n, s: from_parallel_env(_MaskedCounter, n, s), num_envs=3, seed=1)


def test_from_parallel_rejects_a_masked_action_before_stepping_any_copy():
    env = from_parallel_env(_MaskedCounter, num_envs=2, seed=0)
    env.reset()
    legal = random_actions(env, torch.Generator().manual_seed(0))["p"]
    bad = legal.clone()
    bad[1, 1] = 1  # at t = 0, agent 1's illegal action is (0 + 1) % 3 = 1
    with pytest.raises(ValueError, match="agent 1 of copy 1 action 1"):
        env.step({"p": bad})
    assert env.action_mask()["p"].shape == (2, 2, 3)
    env.step({"p": legal})  # nothing was stepped by the refused call
    assert int(env.reset()["p"].shape[0]) == 2


class _Goal(_MaskedCounter):
    """``_MaskedCounter`` whose observation is a Dict of a Box ``position`` ``(t, k)`` and a Discrete ``goal`` ``k + 1`` of 3 (no mask)."""

    def observation_space(self, agent):
        return spaces.Dict({"position": spaces.Box(0, 100, (2,)), "goal": spaces.Discrete(3)})

    def _obs(self):
        return {a: {"position": np.array([self.t, int(a[-1])], np.float32), "goal": int(a[-1]) + 1} for a in self.agents}

    def step(self, actions):
        return super().step({a: (self.t + int(a[-1]) + 1) % 3 for a in actions})  # a legal action whatever it is given


def test_from_parallel_reads_other_observation_spaces_through_gymnasiums_flatten():
    env = from_parallel_env(_Goal, num_envs=2, seed=0)
    g = env.spec.groups["p"]
    assert g.obs_shape == (5,) and not g.has_action_mask  # Dict keys sorted: goal as a one-hot of 3, then position
    obs = env.reset()["p"]
    expect = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 1, 0, 1]], dtype=torch.float32)  # agent k: goal k + 1, position (t=0, k)
    assert torch.equal(obs, expect.expand(2, 2, 5)), obs
    obs = env.step({"p": torch.zeros(2, 2, dtype=torch.long)}).obs["p"]
    assert torch.equal(obs[:, :, 3], torch.ones(2, 2))  # t = 1
    check_env(lambda n, s: from_parallel_env(_Goal, n, s), num_envs=3, seed=1)

    class MaskedDiscrete(_MaskedCounter):  # the masking form around a Discrete observation: its one-hot
        def observation_space(self, agent):
            return spaces.Dict({"observation": spaces.Discrete(4), "action_mask": spaces.Box(0, 1, (3,), dtype=np.int8)})

        def _obs(self):
            return {a: {"observation": self.t % 4, "action_mask": m["action_mask"]} for a, m in super()._obs().items()}

    env = from_parallel_env(MaskedDiscrete, num_envs=1, seed=0)
    assert env.spec.groups["p"].has_action_mask and env.spec.groups["p"].obs_shape == (4,)
    assert torch.equal(env.reset()["p"][0], torch.tensor([[1.0, 0, 0, 0]] * 2))


def test_from_parallel_refuses_observations_with_no_flat_form_and_wrong_masks():
    class Seq(_MaskedCounter):
        def observation_space(self, agent):
            return spaces.Sequence(spaces.Box(0, 1, (2,)))

    with pytest.raises(ValueError, match="group 'p': agent 'p_0' has observation space Sequence.*no fixed-size flat form"):
        from_parallel_env(Seq, num_envs=1)

    class WrongSize(_MaskedCounter):
        def observation_space(self, agent):
            return spaces.Dict({"observation": spaces.Box(0, 1, (2,)), "action_mask": spaces.Box(0, 1, (4,), dtype=np.int8)})

    with pytest.raises(ValueError, match="action_mask of shape \\(4,\\)"):
        from_parallel_env(WrongSize, num_envs=1)


# ------------------------------------------------------------------ bad input
class _Mismatched(ParallelEnv):
    metadata = {"name": "mismatched"}

    def __init__(self, dims=(3, 4), max_cycles=5, truncate_at=None):
        self.possible_agents = ["a_0", "a_1"]
        self.agents = []
        self.max_cycles = max_cycles
        self._dims = dict(zip(self.possible_agents, dims))
        self._spaces = {a: spaces.Box(-1, 1, (d,), dtype=np.float32) for a, d in self._dims.items()}
        self._act = spaces.Discrete(2)
        self._truncate_at = truncate_at

    def observation_space(self, agent):
        return self._spaces[agent]

    def action_space(self, agent):
        return self._act

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.zeros(self._dims[a], np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        end = self.t == self._truncate_at
        out = ({a: np.zeros(self._dims[a], np.float32) for a in self.agents}, {a: 0.0 for a in self.agents},
               {a: False for a in self.agents}, {a: end for a in self.agents}, {a: {} for a in self.agents})
        if end:
            self.agents = []
        return out


def test_from_parallel_errors_name_the_problem():
    with pytest.raises(ValueError, match="'a_0' and 'a_1'.*observation"):
        from_parallel_env(_Mismatched, num_envs=1)
    with pytest.raises(ValueError, match="max_steps"):
        from_parallel_env(lambda: _Mismatched((3, 3), max_cycles=None), num_envs=1)
    env = from_parallel_env(lambda: _Mismatched((3, 3), max_cycles=10, truncate_at=4), num_envs=2)
    env.reset()
    for _ in range(3):
        env.step({"a": torch.zeros(2, 2, dtype=torch.long)})
    with pytest.raises(RuntimeError, match="max_steps=4"):
        env.step({"a": torch.zeros(2, 2, dtype=torch.long)})


# ------------------------------------------------------------------ copies, render_mode, metadata, strict actions
def _starts(obs_dicts):
    """Number of distinct start states among per-copy observation dicts."""
    return len({b"".join(np.asarray(o[a], np.float32).tobytes() for a in sorted(o)) for o in obs_dicts})


def test_pickled_copies_draw_fresh_streams_and_seeded_resets_reproduce():
    """Copies made by pickling (as SuperSuit's concat_vec_envs_v1 does) start from distinct states, as
    MPE2's do; reset(seed) makes each reproducible; deepcopy stays exact; copy.copy leaves the original alone."""
    par = toy_parallel()
    copies = [pickle.loads(pickle.dumps(par)) for _ in range(8)]
    assert _starts([c.reset()[0] for c in copies]) == 8
    assert _starts([c.reset(seed=3)[0] for c in copies] + [toy_parallel(seed=99).reset(seed=3)[0]]) == 1
    # a copy taken at the end of an episode (the batched env already started the next one) draws anew
    par.reset(seed=0)
    while par.agents:
        par.step({a: par.action_space(a).sample() for a in par.agents})
    copies = [pickle.loads(pickle.dumps(par)) for _ in range(4)]
    assert _starts([c.reset()[0] for c in copies]) == 4
    assert {tuple(c.action_space("walker_0").sample() for _ in range(8)) for c in copies}.__len__() == 4
    twin = copy.deepcopy(par)
    assert _starts([par.reset()[0], twin.reset()[0]]) == 1  # exact copy: same episode next
    # the batched env itself
    env = ToyEnv(ToyConfig(), num_envs=4, seed=7)
    ref = ToyEnv(ToyConfig(), num_envs=4, seed=7)
    shallow = copy.copy(env)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.seed != env.seed and clone.rng is not env.rng and shallow.rng is not env.rng
    fresh, a, b = clone.reset(), env.reset(), ref.reset()
    assert all(torch.equal(a[g], b[g]) for g in a) and not all(torch.equal(fresh[g], a[g]) for g in a)
    x, y = clone.reset(seed=5), ref.reset(seed=5)
    assert all(torch.equal(x[g], y[g]) for g in x)


def test_pickled_from_parallel_env_copies_diverge():
    env = from_parallel_env(simple_spread_v3.parallel_env, num_envs=2, seed=0)
    copies = [cloudpickle.loads(cloudpickle.dumps(env)) for _ in range(4)]  # MPE2's factory is a local function
    obs = [c.reset()["agent"] for c in copies]
    assert len({o.numpy().tobytes() for o in obs}) == 4
    x, y = copies[0].reset(seed=5)["agent"], env.reset(seed=5)["agent"]
    assert torch.equal(x, y)


@pytest.mark.parametrize("name, reference", [("simple_spread", "simple_spread_v3"), ("simple_tag", "simple_tag_v3"), ("collect_treasure", "collect_treasure_v1"), ("combat", "combat")])
def test_render_mode_and_metadata_follow_pettingzoo(name, reference):
    _need(name)
    env = to_parallel_env(name, seed=0, render_mode="rgb_array")
    assert env.metadata["name"] == reference and env.metadata["render_fps"] == 10
    assert env.metadata["render_modes"] == ["rgb_array"] and env.render_mode == "rgb_array"
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    quiet = to_parallel_env(name, seed=0)
    assert quiet.render_mode is None
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode=None"):
        assert quiet.render() is None


def test_render_mode_human_and_unknown_are_refused():
    with pytest.raises(ValueError, match="'human'.*display server.*rgb_array"):
        to_parallel_env("simple_spread", render_mode="human")
    with pytest.raises(ValueError, match="render_mode must be one of .*'ansi'"):
        to_parallel_env(ToyEnv(ToyConfig(), num_envs=1), render_mode="ansi")


def test_discrete_actions_are_scalars_as_in_the_reference():
    par = toy_parallel()
    par.reset(seed=0)
    for ok in (2, np.int64(2), np.array(2), np.int8(1)):
        par.reset(seed=0)
        par.step({"walker_0": ok})
    par.reset(seed=0)
    with pytest.raises(ValueError, match=r"'walker_0' must be a scalar integer \(shape \(\)\) for Discrete\(3\), got shape \(1,\)"):
        par.step({"walker_0": np.array([2])})
    for bad, what in ((2.0, "float"), (np.float32(1), "float32"), (True, "bool"), ("1", "str")):
        with pytest.raises(ValueError, match=f"'walker_0' must be an integer in \\[0, 3\\), got .* of type {what}"):
            par.step({"walker_0": bad})
    with pytest.raises(ValueError, match=r"'walker_1' must be one integer in \[0, 3\), got 3"):
        par.step({"walker_1": 3})


def test_supersuit_copies_are_independent_and_sb3_ppo_trains(tmp_path):
    """PettingZoo's tutorial pipeline on a maestro env: SuperSuit's pettingzoo_env_to_vec_env_v1 +
    concat_vec_envs_v1 (8 cloudpickled copies, agents as vector entries) for Stable-Baselines3 PPO.
    Every reset (the first and each auto-reset) gives 8 distinct start states; PPO runs its updates."""
    ss = pytest.importorskip("supersuit")
    sb3 = pytest.importorskip("stable_baselines3")
    copies, n_agents = 8, 3
    vec = ss.concat_vec_envs_v1(ss.pettingzoo_env_to_vec_env_v1(to_parallel_env("simple_spread", seed=0)), copies, num_cpus=0, base_class="stable_baselines3")
    assert vec.num_envs == copies * n_agents
    obs = vec.reset()
    assert _starts([{"x": o} for o in obs.reshape(copies, -1)]) == copies
    rng = np.random.default_rng(0)
    resets = 0
    for _ in range(2 * 25):
        obs, rew, dones, infos = vec.step(rng.integers(0, 5, vec.num_envs))
        if dones.all():
            resets += 1
            assert "terminal_observation" in infos[0]
            assert _starts([{"x": o} for o in obs.reshape(copies, -1)]) == copies
    assert resets == 2
    # SB3's own seeding (PPO(seed=...), VecEnv.seed) fails on SuperSuit's ConcatVecEnv, which has no seed();
    # its gymnasium-level reset(seed=s) reaches the copies (copy i gets s + i) and makes the pipeline reproducible
    again = ss.concat_vec_envs_v1(ss.pettingzoo_env_to_vec_env_v1(to_parallel_env("simple_spread", seed=1)), copies, num_cpus=0, base_class="stable_baselines3")
    assert np.array_equal(vec.venv.reset(seed=0)[0], again.venv.reset(seed=0)[0])
    model = sb3.PPO("MlpPolicy", vec, n_steps=32, batch_size=256, n_epochs=2, policy_kwargs={"net_arch": [16, 16]}, device="cpu")
    model.set_logger(sb3.common.logger.configure(str(tmp_path), []))  # SB3's default logger makes a folder in the system temp dir
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=3 * 32 * vec.num_envs)
    assert model.num_timesteps >= 3 * 32 * vec.num_envs
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    vec.close()


class _InfoMaskedCounter(_MaskedCounter):
    """``_MaskedCounter`` with Box observations and its masks in ``infos[agent]["action_mask"]``
    (PettingZoo's other masking convention)."""

    metadata = {"name": "info_masked_counter"}

    def observation_space(self, agent):
        return spaces.Box(0, 100, (2,), dtype=np.float32)

    def _split(self, obs):
        return {a: o["observation"] for a, o in obs.items()}, {a: {"action_mask": o["action_mask"]} for a, o in obs.items()}

    def reset(self, seed=None, options=None):
        obs, _ = super().reset(seed, options)
        return self._split(obs)

    def step(self, actions):
        obs, rew, term, trunc, _ = super().step(actions)
        o, infos = self._split(obs)
        return o, rew, term, trunc, {a: infos.get(a, {}) for a in trunc}


def test_from_parallel_reads_action_masks_from_infos():
    env = from_parallel_env(_InfoMaskedCounter, num_envs=2, seed=0)
    assert env.cfg.info_mask_groups == ("p",)
    assert env.spec.groups["p"].has_action_mask and env.spec.groups["p"].obs_shape == (2,)
    ref = from_parallel_env(_MaskedCounter, num_envs=2, seed=0)  # the same game, masks in Dict observations
    o1, o2 = env.reset(), ref.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        assert torch.equal(o1["p"], o2["p"]) and torch.equal(env.action_mask()["p"], ref.action_mask()["p"])
        a = random_actions(env, gen)  # legal under the info masks: the env asserts it
        o1, o2 = env.step(a).obs, ref.step(a).obs
    bad = random_actions(env, gen)["p"]
    t = int(o1["p"][0, 0, 0])
    bad[0, 0] = t % 3  # agent 0's illegal action at step t
    if bool(env.alive()["p"][0, 0]):
        with pytest.raises(ValueError, match="agent 0 of copy 0"):
            env.step({"p": bad})
    check_env(lambda n, s: from_parallel_env(_InfoMaskedCounter, n, s), num_envs=3, seed=1)
    assert not from_parallel_env(_InfoMaskedCounter, num_envs=1, info_masks=False).spec.groups["p"].has_action_mask


def test_from_parallel_names_an_agent_whose_info_mask_is_missing():
    class Forgetful(_InfoMaskedCounter):
        def step(self, actions):
            obs, rew, term, trunc, infos = super().step(actions)
            return obs, rew, term, trunc, {a: {} for a in infos}

    env = from_parallel_env(Forgetful, num_envs=1, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="agent 'p_0' is present but its info has no 'action_mask'"):
        env.step(random_actions(env, torch.Generator().manual_seed(0)))


def test_round_trip_keeps_a_masked_envs_action_masks():
    """to_parallel_env writes a masked env's masks into infos; from_parallel_env reads them back."""
    ref = maestro.make_env("combat", num_envs=1, seed=4, max_steps=12)
    rt = from_parallel_env(lambda: to_parallel_env("combat", seed=0, max_steps=12), num_envs=1, seed=4)
    assert rt.spec.groups["agent"].has_action_mask
    ref.reset(seed=4), rt.reset()
    gen = torch.Generator().manual_seed(1)
    for t in range(30):
        assert torch.equal(ref.action_mask()["agent"], rt.action_mask()["agent"]), f"step {t}"
        a = random_actions(ref, gen)
        x, y = ref.step(a), rt.step(a)
        assert torch.allclose(x.obs["agent"], y.obs["agent"]) and torch.equal(x.done, y.done), f"step {t}"
