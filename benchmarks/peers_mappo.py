"""Side-by-side MAPPO learning benchmark against peer libraries (issue 3): JaxMARL and BenchMARL.

Each peer runs in its own virtual environment (never a maestro dependency; install commands in
``benchmarks/peers/README.md``). This script writes a small runner for each peer to a temp dir,
runs it with that venv's python for a bounded budget, and prints a table next to maestro's
``benchmarks/learning.py`` (optionally run here too, with ``--maestro``).

Settings follow ``recipes/mappo/simple_spread.yaml`` (read from it: rollout length, epochs,
minibatches, lr, entropy; today 25 steps, 5 epochs x 4 minibatches, 7e-4, 0.005): MPE
simple_spread_v3, N=3, 25-step episodes, local_ratio 0.5, 128 env copies, 64x64 ReLU MLPs, gamma
0.99, GAE lambda 0.95, clip 0.2, one CPU thread per process. ``--jaxmarl-config jaxmarl`` gives
JaxMARL its own MPE values instead. The metric is the
mean per-agent episode return of deterministic (greedy) evaluation episodes, in maestro's units
(both peers' rewards are MPE2 simple_spread_v3's: (1-local_ratio)*global + local_ratio*collisions).

  * jaxmarl: JaxMARL ships no baselines in its wheel, and its MPE MAPPO baseline
    (baselines/MAPPO/mappo_rnn_mpe.py) is recurrent. The runner below is a feed-forward MAPPO written
    for this benchmark on ``jaxmarl.make("MPE_simple_spread_v3")``, following that baseline's
    structure (shared actor, centralised critic on all agents' concatenated observations, clipped PPO
    and clipped-MSE value loss, Adam eps 1e-5, grad-norm clip 0.5, whole update jitted).
  * benchmarl: BenchMARL's own ``Experiment`` with ``MappoConfig`` on ``PettingZooTask.SIMPLE_SPREAD``
    (PettingZoo's MPE simple_spread_v3, not VMAS's port), 128 envs in torchrl's SerialEnv. With
    ``--benchmarl-task vmas`` it uses VMAS's vectorised port instead (different physics, and a shared
    reward of -N * sum of min landmark distances - all collisions: its returns are not in maestro's
    units, so only its env-steps/s is comparable).

    python benchmarks/peers_mappo.py --jaxmarl /tmp/peers/jaxmarl --benchmarl /tmp/peers/benchmarl \
        --max-env-steps 2000000 --max-seconds 900 [--maestro]

Time to target counts everything from process start of training (JIT compile / experiment setup and
evaluations included, as ``benchmarks/learning.py`` does); env-steps/s counts training iterations only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RANDOM, HEURISTIC = -26.81, -8.75  # benchmarks/learning.py, 128 fixed-seed episodes
TARGET = RANDOM + 0.9 * (HEURISTIC - RANDOM)  # -10.56
REPO = Path(__file__).resolve().parents[1]

JAXMARL_RUNNER = r'''
"""Feed-forward MAPPO on JaxMARL's MPE_simple_spread_v3, structured like JaxMARL's
baselines/MAPPO/mappo_rnn_mpe.py (shared actor, centralised critic on the concatenation of all
agents' observations, GAE, clipped PPO + clipped MSE value loss, Adam eps 1e-5, global-norm clip),
with the GRU replaced by a 64x64 MLP and maestro's recipe hyperparameters. Written for the
maestro peer benchmark: JaxMARL's wheel ships no baselines and its MPE MAPPO baseline is recurrent.
Prints one JSON line per evaluation."""
import argparse, json, time, sys
import jax, jax.numpy as jnp, numpy as np, optax
import flax.linen as nn
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState
import jaxmarl

p = argparse.ArgumentParser()
p.add_argument("--max-env-steps", type=int, default=2_000_000)
p.add_argument("--max-seconds", type=float, default=900)
p.add_argument("--eval-every", type=int, default=250_000)
p.add_argument("--eval-episodes", type=int, default=128)
p.add_argument("--num-envs", type=int, default=128)
p.add_argument("--num-steps", type=int, default=25)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--minibatches", type=int, default=1)
p.add_argument("--lr", type=float, default=7e-4)
p.add_argument("--hidden", type=int, default=64)
p.add_argument("--ent-coef", type=float, default=0.01)
p.add_argument("--vf-coef", type=float, default=0.5)
p.add_argument("--clip", type=float, default=0.2)
p.add_argument("--max-grad-norm", type=float, default=0.5)
p.add_argument("--gamma", type=float, default=0.99)
p.add_argument("--gae-lambda", type=float, default=0.95)
p.add_argument("--anneal-lr", action="store_true", help="linear LR decay to 0 over --max-env-steps (JaxMARL's ANNEAL_LR)")
p.add_argument("--target", type=float, default=None)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()

env = jaxmarl.make("MPE_simple_spread_v3", num_agents=3, num_landmarks=3, local_ratio=0.5)
agents, NA, E, T = env.agents, env.num_agents, a.num_envs, a.num_steps
obs_dim = env.observation_space(agents[0]).shape[0]
n_act = env.action_space(agents[0]).n


class Categorical:  # minimal stand-in for distrax.Categorical (distrax is not a jaxmarl dependency)
    def __init__(self, logits):
        self.logits = logits
        self.logp = jax.nn.log_softmax(logits, axis=-1)

    def sample(self, seed):
        return jax.random.categorical(seed, self.logits, axis=-1)

    def log_prob(self, x):
        return jnp.take_along_axis(self.logp, x[..., None], axis=-1).squeeze(-1)

    def entropy(self):
        return -(jnp.exp(self.logp) * self.logp).sum(-1)


class Actor(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.relu(nn.Dense(a.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        return Categorical(nn.Dense(n_act, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(x))


class Critic(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.relu(nn.Dense(a.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        return nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(x).squeeze(-1)


actor, critic = Actor(), Critic()


def stack_obs(obs):  # -> [E, NA, obs_dim], world state [E, NA, NA*obs_dim] (same for every agent)
    o = jnp.stack([obs[ag] for ag in agents], axis=1)
    ws = jnp.repeat(o.reshape(o.shape[0], 1, -1), NA, axis=1)
    return o, ws


def env_step(keys, st, act):
    return jax.vmap(env.step)(keys, st, {ag: act[:, i] for i, ag in enumerate(agents)})


rng = jax.random.PRNGKey(a.seed)
rng, k1, k2, k3 = jax.random.split(rng, 4)
n_updates = a.max_env_steps // (T * E)
lr = (optax.linear_schedule(a.lr, 0.0, n_updates * a.epochs * a.minibatches) if a.anneal_lr else a.lr)
tx = lambda: optax.chain(optax.clip_by_global_norm(a.max_grad_norm), optax.adam(lr, eps=1e-5))
ts_a = TrainState.create(apply_fn=actor.apply, params=actor.init(k1, jnp.zeros((1, obs_dim))), tx=tx())
ts_c = TrainState.create(apply_fn=critic.apply, params=critic.init(k2, jnp.zeros((1, NA * obs_dim))), tx=tx())
obs0, st0 = jax.vmap(env.reset)(jax.random.split(k3, E))


@jax.jit
def update(carry):
    ts_a, ts_c, obs, st, rng = carry

    def step(c, _):
        obs, st, rng = c
        rng, ka, ks = jax.random.split(rng, 3)
        o, ws = stack_obs(obs)
        pi = actor.apply(ts_a.params, o)
        act = pi.sample(seed=ka)
        v = critic.apply(ts_c.params, ws)
        obs2, st2, rew, done, _ = env_step(jax.random.split(ks, E), st, act)
        r = jnp.stack([rew[ag] for ag in agents], axis=1)
        return (obs2, st2, rng), dict(o=o, ws=ws, act=act, logp=pi.log_prob(act), v=v, r=r,
                                       done=jnp.repeat(done["__all__"][:, None], NA, axis=1))

    (obs, st, rng), tr = jax.lax.scan(step, (obs, st, rng), None, T)
    _, ws_last = stack_obs(obs)
    last_v = critic.apply(ts_c.params, ws_last)

    def gae_fn(c, t):
        gae, nv = c
        d = t["r"] + a.gamma * nv * (1 - t["done"]) - t["v"]
        gae = d + a.gamma * a.gae_lambda * (1 - t["done"]) * gae
        return (gae, t["v"]), gae

    _, adv = jax.lax.scan(gae_fn, (jnp.zeros_like(last_v), last_v), tr, reverse=True)
    tgt = adv + tr["v"]
    flat = jax.tree.map(lambda x: x.reshape((T * E * NA,) + x.shape[3:]), dict(**tr, adv=adv, tgt=tgt))

    def epoch(c, _):
        ts_a, ts_c, rng = c
        rng, kp = jax.random.split(rng)
        perm = jax.random.permutation(kp, T * E * NA)
        mbs = jax.tree.map(lambda x: x[perm].reshape((a.minibatches, -1) + x.shape[1:]), flat)

        def mb(c, b):
            ts_a, ts_c = c

            def aloss(p):
                pi = actor.apply(p, b["o"])
                lp = pi.log_prob(b["act"])
                ratio = jnp.exp(lp - b["logp"])
                g = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
                l = -jnp.minimum(ratio * g, jnp.clip(ratio, 1 - a.clip, 1 + a.clip) * g).mean()
                return l - a.ent_coef * pi.entropy().mean()

            def closs(p):
                v = critic.apply(p, b["ws"])
                vc = b["v"] + (v - b["v"]).clip(-a.clip, a.clip)
                return a.vf_coef * 0.5 * jnp.maximum(jnp.square(v - b["tgt"]), jnp.square(vc - b["tgt"])).mean()

            ts_a = ts_a.apply_gradients(grads=jax.grad(aloss)(ts_a.params))
            ts_c = ts_c.apply_gradients(grads=jax.grad(closs)(ts_c.params))
            return (ts_a, ts_c), None

        (ts_a, ts_c), _ = jax.lax.scan(mb, (ts_a, ts_c), mbs)
        return (ts_a, ts_c, rng), None

    (ts_a, ts_c, rng), _ = jax.lax.scan(epoch, (ts_a, ts_c, rng), None, a.epochs)
    train_ret = tr["r"].mean() * env.max_steps  # mean per-step reward x episode length (= per-agent episode return)
    return (ts_a, ts_c, obs, st, rng), train_ret


@jax.jit
def evaluate(params):
    # greedy, eval_episodes fixed-seed episodes, mean per-agent episode return
    n = a.eval_episodes
    obs, st = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(2024), n))

    def step(c, k):
        obs, st, ret = c
        o, _ = stack_obs(obs)
        act = jnp.argmax(actor.apply(params, o).logits, axis=-1)
        obs, st, rew, _, _ = env_step(jax.random.split(k, n), st, act)
        return (obs, st, ret + jnp.stack([rew[ag] for ag in agents], axis=1)), None

    (_, _, ret), _ = jax.lax.scan(step, (obs, st, jnp.zeros((n, NA))), jax.random.split(jax.random.PRNGKey(7), env.max_steps))
    return ret.mean()


def emit(**kw):
    print(json.dumps(kw), flush=True)


emit(kind="meta", peer="jaxmarl", jax=jax.__version__, jaxmarl=getattr(jaxmarl, "__version__", "?"),
     devices=str(jax.devices()), env="MPE_simple_spread_v3", obs_dim=int(obs_dim), n_actions=int(n_act))
t0 = time.perf_counter()
carry = (ts_a, ts_c, obs0, st0, rng)
carry, _ = update(carry); jax.block_until_ready(carry)  # compile (counts as wall-clock, reported separately)
steps = T * E
t_compile = time.perf_counter() - t0
float(evaluate(carry[0].params))
emit(kind="compile", seconds=t_compile + 0.0, eval_compile_done=time.perf_counter() - t0)
train_time, next_eval = 0.0, a.eval_every
while True:
    t1 = time.perf_counter()
    carry, tr_ret = update(carry)
    tr_ret = float(tr_ret)
    train_time += time.perf_counter() - t1
    steps += T * E
    if steps >= next_eval or steps >= a.max_env_steps or time.perf_counter() - t0 > a.max_seconds:
        next_eval += a.eval_every
        r = float(evaluate(carry[0].params))
        emit(kind="eval", env_steps=steps, wall=time.perf_counter() - t0, train_seconds=train_time,
             train_sps=(steps - T * E) / max(train_time, 1e-9), eval_return=r, train_return=tr_ret)
        if a.target is not None and r >= a.target:
            break
        if steps >= a.max_env_steps or time.perf_counter() - t0 > a.max_seconds:
            break
'''

BENCHMARL_RUNNER = r'''
"""BenchMARL MAPPO on simple_spread (N=3, 25-step episodes) with maestro's recipe hyperparameters.
--task pettingzoo (default): PettingZoo's MPE simple_spread_v3, local_ratio 0.5 (maestro's reward);
--task vmas: VMAS's port (different physics; reward shared by all agents: -N * sum of min landmark
distances - all collisions, so not in maestro's units), discrete actions. Uses BenchMARL's own Experiment; a Callback records time, frames and
the mean per-agent episode return of BenchMARL's (deterministic) evaluation. Prints JSON lines."""
import argparse, json, tempfile, time
import torch

p = argparse.ArgumentParser()
p.add_argument("--max-env-steps", type=int, default=2_000_000)
p.add_argument("--max-seconds", type=float, default=900)
p.add_argument("--eval-every", type=int, default=256_000)  # must be a multiple of 3200 (frames per batch)
p.add_argument("--eval-episodes", type=int, default=128)
p.add_argument("--num-envs", type=int, default=128)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--target", type=float, default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--task", choices=["pettingzoo", "vmas"], default="pettingzoo")
p.add_argument("--num-steps", type=int, default=25)   # rollout length per env copy
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--minibatches", type=int, default=1)
p.add_argument("--lr", type=float, default=7e-4)
p.add_argument("--ent-coef", type=float, default=0.01)
a = p.parse_args()
torch.set_num_threads(a.threads)

import benchmarl, torchrl, tensordict, pettingzoo
from benchmarl.algorithms import MappoConfig
from benchmarl.environments import PettingZooTask, VmasTask
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.experiment.callback import Callback
from benchmarl.models.mlp import MlpConfig


def emit(**kw):
    print(json.dumps(kw), flush=True)


def _vmas_version():
    try:
        import vmas
        return vmas.__version__
    except ImportError:
        return None


class Stop(Exception):
    pass


if a.task == "pettingzoo":
    task = PettingZooTask.SIMPLE_SPREAD.get_from_yaml()
    task.config.update(dict(max_cycles=25, N=3, local_ratio=0.5))
else:
    task = VmasTask.SIMPLE_SPREAD.get_from_yaml()
    task.config.update(dict(max_steps=25, n_agents=3))
T = 25
cfg = ExperimentConfig.get_from_yaml()
cfg.sampling_device = cfg.train_device = cfg.buffer_device = "cpu"
cfg.share_policy_params = True
cfg.prefer_continuous_actions = False  # MPE's 5 discrete actions
cfg.gamma = 0.99
cfg.lr = a.lr
cfg.adam_eps = 1e-5
cfg.on_policy_collected_frames_per_batch = a.num_envs * a.num_steps   # one rollout of all env copies
cfg.on_policy_n_envs_per_worker = a.num_envs
cfg.on_policy_n_minibatch_iters = a.epochs * a.minibatches            # epochs x minibatches iterations ...
cfg.on_policy_minibatch_size = a.num_envs * a.num_steps // a.minibatches  # ... of a 1/minibatches slice
cfg.max_n_frames = a.max_env_steps
cfg.evaluation = True
cfg.evaluation_interval = a.eval_every
cfg.evaluation_episodes = a.eval_episodes
cfg.evaluation_deterministic_actions = True
cfg.render = False
cfg.loggers = ["csv"]
cfg.create_json = False
cfg.checkpoint_interval = 0
cfg.checkpoint_at_end = False
cfg.save_folder = tempfile.mkdtemp(prefix="benchmarl_")
alg = MappoConfig.get_from_yaml()
alg.entropy_coef = a.ent_coef
alg.lmbda = 0.95
alg.share_param_critic = True
model = MlpConfig(num_cells=[64, 64], activation_class=torch.nn.ReLU, layer_class=torch.nn.Linear)
critic = MlpConfig(num_cells=[64, 64], activation_class=torch.nn.ReLU, layer_class=torch.nn.Linear)

state = dict(t0=None, eval_time=0.0, eval_start=0.0)


class Recorder(Callback):
    def on_batch_collected(self, batch):
        if time.perf_counter() - state["t0"] > a.max_seconds:
            emit(kind="stop", reason="max_seconds", env_steps=self.experiment.total_frames)
            raise Stop

    def on_evaluation_end(self, rollouts):
        ex = self.experiment
        rets = []
        for td in rollouts:
            key = next(k for k in td.keys(True, True) if k[0] == "next" and k[-1] == "reward" and len(k) == 3)
            r = td.get(key)[: T]  # [T, n_agents, 1]
            rets.append(r.sum(0).mean().item())
        r = sum(rets) / len(rets)
        now = time.perf_counter()
        wall = now - state["t0"]
        frames = ex.total_frames
        train_s = wall - state["setup"] - state["eval_time"] - (now - state["eval_start"])  # excludes all evaluations
        emit(kind="eval", env_steps=frames, wall=wall, train_seconds=train_s,
             train_sps=frames / max(train_s, 1e-9), eval_return=r,
             eval_episodes=len(rollouts), episode_len=int(rollouts[0].batch_size[0]))
        if a.target is not None and r >= a.target:
            raise Stop


emit(kind="meta", peer="benchmarl", benchmarl=benchmarl.__version__, torchrl=torchrl.__version__,
     tensordict=tensordict.__version__, torch=torch.__version__, pettingzoo=pettingzoo.__version__,
     threads=torch.get_num_threads(), env=f"{a.task} simple_spread", vmas=_vmas_version())
state["t0"] = time.perf_counter()
ex = Experiment(task=task, algorithm_config=alg, model_config=model, critic_model_config=critic,
                seed=a.seed, config=cfg, callbacks=[Recorder()])
state["setup"] = time.perf_counter() - state["t0"]
emit(kind="setup", seconds=state["setup"])
_orig_eval = ex._evaluation_loop


def timed_eval():
    state["eval_start"] = time.perf_counter()
    try:
        _orig_eval()
    finally:
        state["eval_time"] += time.perf_counter() - state["eval_start"]


ex._evaluation_loop = timed_eval
try:
    ex.run()
except Stop:
    pass
emit(kind="end", env_steps=ex.total_frames, wall=time.perf_counter() - state["t0"])
'''


def _run(cmd: list[str], env: dict[str, str], log: Path) -> list[dict]:
    print("$", " ".join(cmd), flush=True)
    rows: list[dict] = []
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
                print("  ", line, flush=True)
        proc.wait()
    if proc.returncode:
        print(f"  exit code {proc.returncode}; see {log}", flush=True)
    return rows


def recipe_args() -> list[str]:
    """The peer runners' flags for the PPO values of ``recipes/mappo/simple_spread.yaml``
    (rollout length, epochs, minibatches, learning rate, entropy; the rest are MAPPO's defaults)."""
    import yaml

    algo = yaml.safe_load((REPO / "recipes/mappo/simple_spread.yaml").read_text())["algo_config"]
    keys = {"rollout_steps": "--num-steps", "epochs": "--epochs", "minibatches": "--minibatches", "lr": "--lr", "entropy_coef": "--ent-coef"}
    return [x for k, flag in keys.items() if k in algo for x in (flag, str(algo[k]))]


def _maestro(args: argparse.Namespace, env: dict[str, str]) -> list[dict]:
    """Run maestro's own benchmarks/learning.py and turn its progress lines into eval rows."""
    cmd = [str(REPO / ".venv/bin/python"), str(REPO / "benchmarks/learning.py"),
           "--max-env-steps", str(args.max_env_steps), "--eval-every", str(args.eval_every)]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True).stdout
    rows: list[dict] = [{"kind": "meta", "peer": "maestro"}]
    for m in re.finditer(r"^\s*([\d,]+) env steps\s+([\d.]+) s\s+eval return\s+(-?[\d.]+)", out, re.M):
        rows.append({"kind": "eval", "env_steps": int(m[1].replace(",", "")), "wall": float(m[2]), "eval_return": float(m[3])})
    print(out, flush=True)
    return rows


def summarise(name: str, rows: list[dict], target: float) -> dict:
    evals = [r for r in rows if r.get("kind") == "eval"]
    meta = next((r for r in rows if r.get("kind") == "meta"), {})
    s: dict = {"peer": name, "meta": meta, "evals": len(evals)}
    if not evals:
        return s
    best = max(evals, key=lambda r: r["eval_return"])
    hit = next((r for r in evals if r["eval_return"] >= target), None)
    last = evals[-1]
    s.update(env_steps=last["env_steps"], wall=last["wall"], sps=last.get("train_sps"),
             best=best["eval_return"], best_steps=best["env_steps"],
             hit_steps=hit and hit["env_steps"], hit_wall=hit and hit["wall"])
    return s


def table(summaries: list[dict], target: float) -> str:
    lines = [f"target {target:.2f} (random {RANDOM:.2f}, heuristic {HEURISTIC:.2f}); returns: mean per-agent episode return, greedy eval",
             f"{'peer':<10} {'train env-steps/s':>17} {'steps run':>10} {'wall s':>8} {'best return (@steps)':>22} {'steps to target':>15} {'wall to target s':>16}"]
    for s in summaries:
        if "best" not in s:
            lines.append(f"{s['peer']:<10} (no evaluations: failed, see log)")
            continue
        sps = f"{s['sps']:,.0f}" if s.get("sps") else "-"
        hs = f"{s['hit_steps']:,}" if s["hit_steps"] else "not reached"
        hw = f"{s['hit_wall']:.1f}" if s["hit_wall"] else "-"
        lines.append(f"{s['peer']:<10} {sps:>17} {s['env_steps']:>10,} {s['wall']:>8.1f} "
                     f"{s['best']:>10.2f} (@{s['best_steps']:,}) {hs:>15} {hw:>16}")
    ref = next((s for s in summaries if s["peer"] == "maestro" and s.get("hit_wall")), None)
    if ref:
        for s in summaries:
            if s["peer"] != "maestro" and s.get("hit_wall"):
                lines.append(f"wall-clock ratio {s['peer']} / maestro: {s['hit_wall'] / ref['hit_wall']:.2f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jaxmarl", help="JaxMARL venv directory (contains bin/python)")
    p.add_argument("--benchmarl", help="BenchMARL venv directory (contains bin/python)")
    p.add_argument("--benchmarl-task", choices=["pettingzoo", "vmas"], default="pettingzoo",
                   help="pettingzoo: MPE simple_spread_v3 (maestro's reward); vmas: VMAS's port (needs vmas; other reward units)")
    p.add_argument("--jaxmarl-config", choices=["maestro", "jaxmarl"], default="maestro",
                   help="maestro: the recipe's PPO values (rollout, epochs, minibatches, lr, entropy); jaxmarl: JaxMARL's mappo_homogenous_rnn_mpe.yaml values "
                        "(lr 2e-3 annealed, 128-step rollouts, 4 epochs x 4 minibatches, width 128) on the FF network")
    p.add_argument("--maestro", action="store_true", help="also run benchmarks/learning.py with the repo's .venv")
    p.add_argument("--max-env-steps", type=int, default=2_000_000)
    p.add_argument("--max-seconds", type=float, default=900)
    p.add_argument("--eval-every", type=int, default=250_000, help="benchmarl rounds down to a multiple of 3200")
    p.add_argument("--eval-episodes", type=int, default=128)
    p.add_argument("--target", type=float, default=TARGET)
    p.add_argument("--no-stop", action="store_true", help="keep training after the target is reached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the raw JSON rows here")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="maestro_peers_"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    common = ["--max-env-steps", str(args.max_env_steps), "--max-seconds", str(args.max_seconds),
              "--eval-episodes", str(args.eval_episodes), "--seed", str(args.seed)]
    if not args.no_stop:
        common += ["--target", str(args.target)]
    results: dict[str, list[dict]] = {}
    if args.maestro:
        results["maestro"] = _maestro(args, env)
    for name, venv, src, every in (("jaxmarl", args.jaxmarl, JAXMARL_RUNNER, args.eval_every),
                                   ("benchmarl", args.benchmarl, BENCHMARL_RUNNER, max(3200, args.eval_every // 3200 * 3200))):
        if not venv:
            continue
        script = tmp / f"{name}_runner.py"
        script.write_text(src)
        extra = ["--task", args.benchmarl_task] if name == "benchmarl" else []
        if name == "jaxmarl" and args.jaxmarl_config == "jaxmarl":
            extra = ["--lr", "2e-3", "--anneal-lr", "--num-steps", "128", "--epochs", "4", "--minibatches", "4", "--hidden", "128"]
        elif name == "jaxmarl":
            extra = recipe_args()
        if name == "benchmarl" and args.benchmarl_task == "pettingzoo":
            extra += recipe_args()
        results[name] = _run([str(Path(venv) / "bin/python"), str(script), *common, "--eval-every", str(every), *extra], env, tmp / f"{name}.log")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print()
    print(table([summarise(k, v, args.target) for k, v in results.items()], args.target))
    for k, v in results.items():
        meta = next((r for r in v if r.get("kind") == "meta"), {})
        print(f"{k}: {json.dumps({x: y for x, y in meta.items() if x not in ('kind', 'peer')})}")


if __name__ == "__main__":
    main()
