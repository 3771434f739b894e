"""maestro's PPO beside Stable-Baselines3's PPO on Walker2d-v5 (or Humanoid-v5), timed back to back.

Both learners get the same hyperparameters, CleanRL's ``ppo_continuous_action`` for MuJoCo (2048
env steps per update, 10 epochs of 64-sample minibatches, Adam 3e-4 annealed linearly to 0, gamma 0.99,
GAE 0.95, clip 0.2, value coefficient 0.5, no entropy bonus, gradient clip 0.5, tanh 64x64 networks,
initial log-std 0, observation normalisation and reward scaling clipped at 10):

* SB3: ``PPO("MlpPolicy")`` on one Gymnasium env in ``DummyVecEnv`` + ``VecNormalize`` (n_steps 2048);
* maestro: ``ippo`` on ``walker2d`` (``role="slave"``: Gymnasium's healthy range, i.e. plain
  Walker2d-v5) with 8 copies x 256 steps per update, ``network: mlp`` with the same widths
  (``--network stem_backbone_head --hidden 64 64 64`` gives the paper's four-layer networks).

MuJoCo timings on a shared machine swing by 2-3x from minute to minute, so the two run alternately,
``--rounds`` times (seed = round), the order flipped every round, one torch thread each; the load
average is printed with every run. Reported per run: wall-clock, env steps/s, the mean return of the
last 20 training episodes at ``--steps``, and the mean return of 10 deterministic test episodes;
then the median ratios maestro/SB3.

    python benchmarks/mujoco_ppo_peer.py --steps 20000 --rounds 1        # a smoke run
    python benchmarks/mujoco_ppo_peer.py --steps 1000000 --rounds 3      # the issue's benchmark
    python benchmarks/mujoco_ppo_peer.py --steps 1000000 --rounds 1 --first-round 2   # a third round after two
    python benchmarks/mujoco_ppo_peer.py --combine benchmarks/results/ppo_peer/walker2d_r*.json   # one table over sittings

A round is two runs of about 10 and 20 minutes (Walker2d, 1M steps), longer on Humanoid, so the
rounds of one comparison may come from several sittings: give each its own ``--json`` (the ones
measured here are kept in ``benchmarks/results/ppo_peer/``) and ``--combine`` them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import maestro
from maestro.algos import ppo
from maestro.core.evaluate import evaluate
from maestro.core.run import Run, RunConfig

BODIES = {"walker2d": "Walker2d-v5", "humanoid": "Humanoid-v5"}


def run_maestro(body: str, steps: int, seed: int, network: str, hidden: tuple[int, ...]) -> dict[str, Any]:
    cfg = ppo.Config(
        rollout_steps=256, epochs=10, minibatches=32, lr=3e-4, critic_lr=3e-4, lr_end_factor=0.0, gamma=0.99, gae_lambda=0.95,
        clip=0.2, value_clip=0.2, value_loss="mse", value_coef=0.5, entropy_coef=0.0, max_grad_norm=0.5, value_norm=False,
        hidden=hidden, activation="tanh", feature_norm=False, init_log_std=0.0, network=network, obs_norm=True, reward_scale=True,
    )  # fmt: skip
    env = maestro.make_env(body, num_envs=8, seed=seed, role="slave")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with Run(RunConfig(env_steps=steps, num_envs=8, eval_episodes=0, progress=False, tensorboard=False), Path(d), seed=seed) as run:
            policy = ppo.train_ippo(cfg, env, run)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    returns = [(r["train/episode_return"], r["train/episodes"]) for r in rows if "train/episode_return" in r]
    last: list[float] = []
    for mean, n in reversed(returns):  # per-rollout means, weighted back to episodes
        last = [mean] * int(n) + last
        if len(last) >= 20:
            break
    test = evaluate(policy, maestro.make_env(body, num_envs=10, seed=10_000 + seed, role="slave"), seed=10_000 + seed, deterministic=True)
    return {"wall_s": wall, "steps_per_s": steps / wall, "train_return_last20": float(np.mean(last[-20:])) if last else float("nan"), "test_return": float(test["episode_return"].mean())}


def run_sb3(body: str, steps: int, seed: int) -> dict[str, Any]:
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: Monitor(gym.make(BODIES[body]))]), norm_obs=True, norm_reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99)
    model = PPO(
        "MlpPolicy", venv, n_steps=2048, batch_size=64, n_epochs=10, learning_rate=lambda f: 3e-4 * f, gamma=0.99, gae_lambda=0.95,
        clip_range=0.2, clip_range_vf=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, seed=seed, device="cpu",
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh, "log_std_init": 0.0},
    )  # fmt: skip
    logs = tempfile.TemporaryDirectory()  # SB3's default logger would leave a folder in the system temp dir
    model.set_logger(configure(logs.name, []))
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    logs.cleanup()
    episodes = [e["r"] for e in model.ep_info_buffer]
    venv.training, venv.norm_reward = False, False
    test = []
    eval_env = gym.make(BODIES[body])
    for k in range(10):
        obs, _ = eval_env.reset(seed=10_000 + seed + k)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(venv.normalize_obs(obs[None]), deterministic=True)
            obs, r, term, trunc, _ = eval_env.step(action[0])
            total += float(r)
            done = term or trunc
        test.append(total)
    return {"wall_s": wall, "steps_per_s": steps / wall, "train_return_last20": float(np.mean(episodes[-20:])) if episodes else float("nan"), "test_return": float(np.mean(test))}


def combined_table(rows: list[dict[str, Any]]) -> str:
    """The runs of several sittings as one Markdown table (by round, in the order they ran), the
    wall-clock ratio maestro / SB3 of each round (paired: the two ran back to back) and its median,
    and each learner's test and training returns over the rounds (mean ± 95% CI over seeds)."""
    from maestro.core.evaluate import mean_ci95

    rows = sorted(rows, key=lambda x: x["round"])  # stable: within a round, the order they ran
    lines = [
        "| round | learner | load (1 min) | wall s | env steps/s | train return (last 20 episodes) | test return (10 episodes) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for x in rows:
        load = f"{x['load']:.2f}" if "load" in x else "–"
        lines.append(
            f"| {x['round']} | {x['learner']} | {load} | {x['wall_s']:.0f} | {x['steps_per_s']:.0f} | {x['train_return_last20']:.0f} | {x['test_return']:.0f} |"
        )
    by = {(x["round"], x["learner"]): x for x in rows}
    paired = sorted(r for r, who in by if who == "maestro" and (r, "sb3") in by)
    ratios = [by[(r, "maestro")]["wall_s"] / by[(r, "sb3")]["wall_s"] for r in paired]
    lines.append("")
    if ratios:
        lines.append(f"Wall-clock maestro / SB3 per round: {', '.join(f'{x:.2f}' for x in ratios)} (median {np.median(ratios):.2f}; target <= 0.5).")
    for who in ("maestro", "sb3"):
        runs = [by[(r, who)] for r in paired]
        if runs:
            test, train = (mean_ci95(np.array([x[k] for x in runs])) for k in ("test_return", "train_return_last20"))
            lines.append(f"{who}: test return {test[0]:.0f} ± {test[1]:.0f}, training return {train[0]:.0f} ± {train[1]:.0f} over {len(runs)} rounds.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--body", default="walker2d", choices=sorted(BODIES))
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--first-round", type=int, default=0, help="start at this round (its seed), e.g. 2 to add a third round to two already run")
    p.add_argument("--network", default="mlp", choices=["mlp", "stem_backbone_head"])
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--json", default="", help="write this sitting's runs here (a list of rows, as --combine reads)")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON", help="train nothing: one table and the ratios over the rounds of several sittings' --json files")
    args = p.parse_args(argv)
    if args.combine:
        rows = [row for path in args.combine for row in json.loads(Path(path).read_text())]
        print(combined_table(rows))
        return 0
    torch.set_num_threads(1)
    # one-off lazy imports (torch's optimiser machinery takes seconds the first time) happen before any timing
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True).step()
    import stable_baselines3  # noqa: F401

    results: list[dict[str, Any]] = []
    print(f"{args.body} ({BODIES[args.body]}), {args.steps} env steps per run, {args.rounds} rounds, {os.cpu_count()} cores")
    print("| round | learner | load (1 min) | wall s | env steps/s | train return (last 20 episodes) | test return (10 episodes) |")
    print("|---|---|---|---|---|---|---|")
    for r in range(args.first_round, args.first_round + args.rounds):
        order = ["maestro", "sb3"] if r % 2 == 0 else ["sb3", "maestro"]
        for who in order:
            load = os.getloadavg()[0]
            out = run_maestro(args.body, args.steps, r, args.network, tuple(args.hidden)) if who == "maestro" else run_sb3(args.body, args.steps, r)
            out.update(round=r, learner=who, load=load)
            results.append(out)
            print(f"| {r} | {who} | {load:.2f} | {out['wall_s']:.1f} | {out['steps_per_s']:.0f} | {out['train_return_last20']:.1f} | {out['test_return']:.1f} |", flush=True)
    ratios = [m["wall_s"] / s["wall_s"] for m, s in zip((x for x in results if x["learner"] == "maestro"), (x for x in results if x["learner"] == "sb3"))]
    print(f"wall-clock maestro / SB3 per round: {[round(x, 2) for x in ratios]} (median {np.median(ratios):.2f}; target <= 0.5)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
