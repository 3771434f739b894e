"""``check_env``: does an environment honour the batched contract of ``maestro.envs.api``?

Checked, each with an ``AssertionError`` naming what differs:

1. shapes and dtypes of ``obs``, ``reward``, ``terminated``/``truncated``, ``alive``, ``state``,
   ``info`` and action masks against ``env.spec``;
2. seeding: two envs with the same seed give identical trajectories under identical actions,
   and ``reset(seed)`` restarts the same trajectory;
3. auto-reset: finished copies restart (step counter and returns at zero), ``final_obs`` holds the
   pre-reset observation, ``info`` reports the episode's length and return;
4. batched == one by one: each copy of a batched env, replayed alone in a ``num_envs=1`` env from
   its snapshot (``get_state``/``set_state``) with the same actions, gives the same observations,
   rewards and terminations;
5. ``set_state(get_state())`` round-trips, and a wrong-shaped action raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, StepOut, random_actions

EnvFactory = Callable[[int, int], BatchedEnv]


def _factory(env: str | EnvFactory, kwargs: dict[str, Any]) -> EnvFactory:
    if callable(env):
        return env
    from maestro.registry import make_env

    return lambda num_envs, seed: make_env(env, num_envs=num_envs, seed=seed, **kwargs)


def _close(a: Tensor, b: Tensor, atol: float) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.is_floating_point:
        return torch.allclose(a, b, atol=atol, rtol=0, equal_nan=True)
    return bool(torch.equal(a, b))


def _assert_step_shapes(env: BatchedEnv, out: StepOut) -> None:
    spec, B = env.spec, env.num_envs
    for field in ("obs", "final_obs"):
        obs = getattr(out, field)
        assert set(obs) == set(spec.groups), f"{field} groups {sorted(obs)} != spec groups {spec.group_names}"
        for g, gs in spec.groups.items():
            exp = (B, gs.n_agents, *gs.obs_shape)
            assert tuple(obs[g].shape) == exp, f"{field}[{g!r}] shape {tuple(obs[g].shape)}, expected {exp}"
            assert obs[g].dtype == torch.float32, f"{field}[{g!r}] dtype {obs[g].dtype}, expected float32"
            assert obs[g].device == env.device, f"{field}[{g!r}] on {obs[g].device}, expected {env.device}"
            assert torch.isfinite(obs[g]).all(), f"{field}[{g!r}] has non-finite values"
    for g, gs in spec.groups.items():
        assert tuple(out.reward[g].shape) == (B, gs.n_agents), f"reward[{g!r}] shape {tuple(out.reward[g].shape)}, expected {(B, gs.n_agents)}"
        assert out.reward[g].dtype == torch.float32, f"reward[{g!r}] dtype {out.reward[g].dtype}"
        assert tuple(out.alive[g].shape) == (B, gs.n_agents) and out.alive[g].dtype == torch.bool, f"alive[{g!r}] must be bool (B, N_g)"
    for name in ("terminated", "truncated"):
        t = getattr(out, name)
        assert tuple(t.shape) == (B,) and t.dtype == torch.bool, f"{name} must be bool ({B},), got {t.dtype} {tuple(t.shape)}"
    assert not bool((out.terminated & out.truncated).any()), "a copy is both terminated and truncated"
    for name in ("state", "final_state"):
        s = getattr(out, name)
        exp = (B, *spec.state_shape)
        assert tuple(s.shape) == exp, f"{name} shape {tuple(s.shape)}, expected {exp}"
        assert s.dtype == torch.float32, f"{name} dtype {s.dtype}, expected float32"
    for k in ("done", "episode_length", *(f"episode_return/{g}" for g in spec.groups), *spec.info_keys, *(f"episode_sum/{k}" for k in spec.episode_sums)):
        assert k in out.info, f"info lacks {k!r} (has {sorted(out.info)})"
    for k, v in out.info.items():
        assert isinstance(v, Tensor) and v.shape[:1] == (B,), f"info[{k!r}] must be a tensor with leading dim {B}"
    masks = env.action_mask()
    for g, gs in spec.groups.items():
        if gs.has_action_mask:
            assert masks is not None and g in masks, f"group {g!r} declares action masks but action_mask() has none"
            exp = (B, gs.n_agents, gs.action_dim)
            assert tuple(masks[g].shape) == exp and masks[g].dtype == torch.bool, f"action_mask[{g!r}] must be bool {exp}"


def _assert_same(a: StepOut, b: StepOut, atol: float, what: str, rows: slice | None = None) -> None:
    def pick(x: Tensor) -> Tensor:
        return x if rows is None else x[rows]

    for field in ("obs", "final_obs", "reward", "alive"):
        for g, x in getattr(a, field).items():
            y = getattr(b, field)[g]
            assert _close(pick(x), y, atol), f"{what}: {field}[{g!r}] differs (max |diff| {(pick(x).float() - y.float()).abs().max().item():.3g})"
    for field in ("terminated", "truncated", "state", "final_state"):
        assert _close(pick(getattr(a, field)), getattr(b, field), atol), f"{what}: {field} differs"


def check_env(env: str | EnvFactory, num_envs: int = 4, seed: int = 0, steps: int | None = None, atol: float = 1e-5, **kwargs: Any) -> None:
    """Run the conformance checks of the module docstring on a registered env name or a factory.

    Args:
        env: a registered name (``kwargs`` go to its config) or ``factory(num_envs, seed)``.
        num_envs: batch size used for the batched checks.
        seed: base seed.
        steps: steps to run; default ``2 * max_steps + 3`` so that copies finish and restart.
        atol: tolerance of float comparisons (batched vs single may differ by float reassociation).
    """
    make = _factory(env, kwargs)
    e = make(num_envs, seed)
    spec = e.spec
    for method in ("reset", "step", "observe", "state", "alive", "action_mask", "get_state", "set_state", "render"):
        assert callable(getattr(e, method, None)), f"env.{method} must be the contract's method; the env shadows it with {type(getattr(e, method, None)).__name__}"
    assert e.num_envs == num_envs
    T = steps if steps is not None else 2 * spec.max_steps + 3
    obs0 = e.reset(seed=seed)
    for g, gs in spec.groups.items():
        assert tuple(obs0[g].shape) == (num_envs, gs.n_agents, *gs.obs_shape), f"reset obs[{g!r}] shape {tuple(obs0[g].shape)}"

    # 1 + 3: shapes on every step; auto-reset bookkeeping.
    gen = torch.Generator(device=e.device)
    gen.manual_seed(seed + 1)
    snapshot = e.get_state()
    actions_log: list[dict[str, Tensor]] = []
    outs: list[StepOut] = []
    t_expected = torch.zeros(num_envs, dtype=torch.long, device=e.device)
    saw_done = False
    for _ in range(T):
        a = random_actions(e, gen)
        actions_log.append(a)
        out = e.step(a)
        outs.append(out)
        _assert_step_shapes(e, out)
        t_expected += 1
        done = out.done
        assert torch.equal(out.info["done"], done), "info['done'] != terminated | truncated"
        assert torch.equal(out.info["episode_length"][done], t_expected[done]), "info['episode_length'] is not the number of steps of the finished episodes"
        assert bool((out.truncated == (t_expected >= spec.max_steps) & ~out.terminated).all()), "truncated must be exactly (t >= max_steps) & ~terminated"
        t_expected[done] = 0
        assert torch.equal(e.get_state()["t"], t_expected), "the step counter did not restart at 0 for finished copies"
        if bool(done.any()):
            saw_done = True
            for g in spec.groups:
                assert bool((e.get_state()[f"episode_return/{g}"][done] == 0).all()), f"episode_return/{g} not reset for finished copies"
        else:
            for g in spec.groups:
                assert torch.equal(out.obs[g], out.final_obs[g]), f"final_obs[{g!r}] != obs although no copy finished"
    if steps is None:
        assert saw_done, f"no copy finished within {T} steps (max_steps={spec.max_steps})"

    # 2: seeding.
    e2 = make(num_envs, seed)
    e2.reset(seed=seed)
    for g in spec.groups:
        assert torch.equal(e2.observe()[g], obs0[g]), f"same seed, different initial obs[{g!r}]"
    for i, a in enumerate(actions_log):
        _assert_same(outs[i], e2.step(a), 0.0, f"same seed, step {i}")
    obs_again = e.reset(seed=seed)
    for g in spec.groups:
        assert torch.equal(obs_again[g], obs0[g]), f"reset(seed) did not restart the same trajectory for {g!r}"

    # 4: batched == one by one, up to each copy's first reset (whose draw depends on the batch).
    first_done = torch.full((num_envs,), T, dtype=torch.long)
    for i, out in enumerate(outs):
        d = out.done.cpu()
        first_done = torch.where(d & (first_done == T), torch.full_like(first_done, i), first_done)
    for b in range(num_envs):
        single = make(1, seed + 1000 + b)
        single.reset()
        single.set_state({k: v[b : b + 1] for k, v in snapshot.items()})
        for i in range(int(first_done[b].item()) + 1 if first_done[b] < T else T):
            o = single.step({g: x[b : b + 1] for g, x in actions_log[i].items()})
            last = i == first_done[b]
            if last:  # the single env's reset draw differs; compare only what precedes it
                for g, x in outs[i].final_obs.items():
                    assert _close(x[b : b + 1], o.final_obs[g], atol), f"copy {b} alone: final_obs[{g!r}] differs at step {i}"
                for g, x in outs[i].reward.items():
                    assert _close(x[b : b + 1], o.reward[g], atol), f"copy {b} alone: reward[{g!r}] differs at step {i}"
                assert torch.equal(outs[i].terminated[b : b + 1], o.terminated), f"copy {b} alone: terminated differs at step {i}"
            else:
                _assert_same(outs[i], o, atol, f"copy {b} alone, step {i}", rows=slice(b, b + 1))

    # 5: snapshot round trip and bad input.
    e.reset(seed=seed + 7)
    for a in actions_log[:3]:
        e.step(a)
    snap = e.get_state()
    a = random_actions(e, gen)
    o1 = e.step(a)
    e.set_state(snap)
    o2 = e.step(a)
    _assert_same(o1, o2, 0.0, "set_state(get_state()) round trip")
    g0, gs0 = next(iter(spec.groups.items()))
    bad = dict(a)
    bad[g0] = a[g0][:, :0]
    try:
        e.step(bad)
    except ValueError as err:
        assert g0 in str(err), f"the error for a wrong action shape does not name the group: {err}"
    else:
        raise AssertionError("a wrong action shape did not raise ValueError")
    try:
        e.set_state({k: v[:0] for k, v in snap.items()})
    except ValueError:
        pass
    else:
        raise AssertionError("set_state with wrong shapes did not raise ValueError")
    frame = e.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and str(frame.dtype) == "uint8", f"render() must return (H, W, 3) uint8, got {frame.shape} {frame.dtype}"
