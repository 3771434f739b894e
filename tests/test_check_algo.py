"""The algorithms' conformance suite: ``check_algo`` over every registered algorithm x compatible env,
and ``check_algo`` itself failing on deliberately broken algorithms."""

from dataclasses import replace

import pytest

import maestro
from maestro.algos import incompatibility
from maestro.algos import ppo
from maestro.algos.check import AlgoCheckError, check_algo
from maestro.registry import algo_entry, algo_names, env_entry, env_names


def _compatible_pairs():
    pairs = []
    for e in env_names():
        entry = env_entry(e)
        spec = entry.cls(entry.config(), num_envs=1, seed=0, device="cpu").spec
        pairs += [(a, e) for a in algo_names() if incompatibility(a, spec) is None]
    return pairs


PAIRS = _compatible_pairs()

SMALL_ENVS = {
    "traffic_junction": {"difficulty": "easy"},  # 20-step episodes on a 7x7 grid (the REINFORCE family waits for whole episodes)
    "combat": {"max_steps": 12},
    "walker2d": {"max_steps": 50},  # MuJoCo physics is the slow part: short evaluation episodes
    "humanoid": {"max_steps": 50},
}
"""Every env at its default config, except shorter episodes where an iteration is whole episodes."""


def test_every_algorithm_is_checked_on_at_least_one_env():
    assert {a for a, _ in PAIRS} == set(algo_names())


@pytest.mark.parametrize("algo,env_name", PAIRS)
def test_check_algo_over_registry(algo, env_name, tmp_path):
    kwargs = SMALL_ENVS.get(env_name, {})
    report = check_algo(algo, lambda n, s: maestro.make_env(env_name, num_envs=n, seed=s, **kwargs), tmp_path, env_name=env_name)
    assert report.changed_parameters


def _spread(n, s):
    return maestro.make_env("simple_spread", num_envs=n, seed=s, n_agents=2)


def test_check_algo_fails_when_no_update_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(ppo, "update", lambda *args, **kwargs: {})
    with pytest.raises(AlgoCheckError, match="property 1 .*no policy parameter changed"):
        check_algo("ippo", _spread, tmp_path)


def test_check_algo_fails_when_resume_drops_the_rng_state(tmp_path):
    real = algo_entry("ippo")

    def train_forgetting_the_generator(cfg, env, run):
        restore = run.restore

        def restore_without_generator():
            state = restore()
            if state is not None:
                state = {k: v for k, v in state.items() if k != "generator"}
                state["generator"] = ppo.make_generator(123, env.device).get_state()
            return state

        run.restore = restore_without_generator
        return real.train(cfg, env, run)

    broken = replace(real, name="ippo_forgets_rng", train=train_forgetting_the_generator)
    with pytest.raises(AlgoCheckError, match="property 3 .*final state differs"):
        check_algo(broken, _spread, tmp_path)


@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_check_algo_with_recurrent_actors(algo, tmp_path):
    # the recurrent PPO variant (Config.recurrent) under the same contract: determinism, bitwise resume
    # (the carried states are in the checkpoint), save/load acting the same over steps carrying the state
    from dataclasses import dataclass
    from typing import ClassVar

    from maestro.registry import Smoke

    @dataclass(frozen=True)
    class RecurrentConfig(ppo.Config):
        SMOKE: ClassVar[Smoke] = Smoke(config={**ppo.Config.SMOKE.config, "recurrent": 8}, iterations=3, stop_at=1)

    entry = replace(algo_entry(algo), config=RecurrentConfig)
    report = check_algo(entry, _spread, tmp_path)
    assert report.changed_parameters
    from maestro.core import checkpoint as ckpt

    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "a" / "checkpoints")[0])["state"]
    assert state["policy"]["arch"]["recurrent"] == 8 and state["cur"]["hidden"]["agent"].shape == (4, 2, 8)
