"""Scaling study of distributed MADDPG (Zhou & Chen, papers/002 Sec. IV): per-update wall-clock of the data-,
model- and model+sampler-parallel modes against single-process MADDPG (``maddpg.update``), as the networks
grow (hidden 64 -> 512) and as the predators grow (3 -> 12), on the embedded Ray and on a simulated
2-node cluster (``ray.cluster_utils.Cluster``, 1 CPU per node). Prints ratios (mode / single) and the
share of the update time spent communicating (serialisation, transfer, coordinator work: 1 - the
slowest worker's compute time / the coordinator's wall-clock per update).

    .venv/bin/python benchmarks/distributed.py                  # default grid
    .venv/bin/python benchmarks/distributed.py --quick          # hidden 64/512 x 3 predators, 64 x 12 predators
    .venv/bin/python benchmarks/distributed.py --quick --clusters embedded --modes data,data:coordinator

Columns ``data`` (gradients all-reduced by the replicas' gloo group, ``distributed.transport=allreduce``, the
default) and ``data:coordinator`` (gradients through the coordinator, two Ray round trips per update);
``model`` (agent workers with env and replay replicas all-gathering actions and target actions, the default)
and ``model:coordinator`` (one Ray round trip per update and one per env step through the coordinator).
A suffix ``@m`` puts ``m`` agents in each model worker (``distributed.agents_per_worker``): ``model@2``
runs the 4 agents of the default cell in 2 workers, one per core of a 2-core machine.

Genetic MADDPG is not in the table: its workers run single-process MADDPG and communicate only at
critic syncs (every 5000 env steps), so its per-update time is the single-process one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

LOOPBACK_ALIAS = "127.0.0.2"  # the 2-node cluster's address (see main)


def single_update_s(cfg, env_cfg, n_updates: int) -> float:
    from maestro.algos import maddpg as M
    from maestro.distributed.common import make_learner

    lr = make_learner(cfg, "simple_tag", env_cfg, 8, 0, "cpu", True, 10_000)
    lr.run_steps(64, updates=False)
    M.update(cfg, lr.policy, lr.nets, lr.opts, lr.buf, lr.lay, True, lr.generator)
    blocks = []
    for _ in range(5):  # the median of 5 blocks: one block's time varies with the machine's other load
        t = time.perf_counter()
        for _ in range(n_updates):
            M.update(cfg, lr.policy, lr.nets, lr.opts, lr.buf, lr.lay, True, lr.generator)
        blocks.append((time.perf_counter() - t) / n_updates)
    return sorted(blocks)[2]


def mode_update_s(column, cfg, env_cfg, env_steps: int) -> tuple[float, float]:
    from maestro.core.run import Run, RunConfig
    from maestro.distributed import train_distributed
    from maestro.distributed.config import DistributedConfig
    from maestro.distributed.common import make_worker_env

    env = make_worker_env("simple_tag", env_cfg, 8, 0, "cpu")
    column, _, per_worker = column.partition("@")
    mode, _, transport = column.partition(":")
    dcfg = DistributedConfig(mode=mode, workers=2, transport=transport or "allreduce", agents_per_worker=int(per_worker or 1))
    with tempfile.TemporaryDirectory() as d:
        run = Run(RunConfig(env_steps=env_steps, num_envs=8, eval_episodes=0, tensorboard=False, progress=False), d, seed=0)
        with run:
            train_distributed(dcfg, "maddpg", cfg, "simple_tag", env_cfg, env, run, 0)
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "dist/update_s" in r][1:] or [r for r in rows if "dist/update_s" in r]  # skip the first (warm-up)
    return sum(r["dist/update_s"] for r in rows) / len(rows), sum(r["dist/comm_share"] for r in rows) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clusters", default="embedded,2node")
    ap.add_argument("--grid", default="", help="hidden:predators cells, e.g. 64:3,512:3 (overrides --quick)")
    ap.add_argument("--modes", default="data,data:coordinator,model,model:coordinator,model_sampler", help="columns: mode, mode:transport, with @m for m agents per model worker (model@2)")
    args = ap.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from maestro.algos.maddpg import Config
    from maestro.envs.particle.simple_tag import TagConfig

    torch.set_num_threads(1)
    grid = [(64, 3), (512, 3), (64, 12)] if args.quick else [(64, 3), (128, 3), (256, 3), (512, 3), (64, 6), (64, 12)]
    if args.grid:
        grid = [tuple(int(v) for v in cell.split(":")) for cell in args.grid.split(",")]
    modes = args.modes.split(",")
    print("| cluster | hidden | predators | single ms/update | " + " | ".join(f"{m} ratio (comm %)" for m in modes) + " |")
    print("|---|---|---|---|" + "---|" * len(modes))
    for cl in args.clusters.split(","):
        cluster = None
        if cl == "embedded":
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        else:
            # 127.0.0.2, a loopback alias: Ray rewrites "127.0.0.1"/"localhost" in a cluster address to
            # the machine's outward IP (ray._private.services.resolve_ip_for_localhost), where the
            # GCS of nodes started on 127.0.0.1 does not listen, and the driver never connects.
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK_ALIAS})
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK_ALIAS)
            ray.init(address=cluster.address, log_to_driver=False, _node_ip_address=LOOPBACK_ALIAS)  # loopback only
        try:
            for hidden, n_adv in grid:
                env_cfg = TagConfig(max_cycles=25, continuous_actions=True, num_adversaries=n_adv)
                cfg = Config(hidden=(hidden, hidden), batch_size=256, warmup_steps=256, update_every=10, updates_per_step=0.1,
                             buffer_size=100_000, actor_lr=1e-3, critic_lr=1e-4, epsilon=0.1, noise_rate=0.1)
                single = single_update_s(cfg, env_cfg, 20)
                cells = []
                for m in modes:
                    t, comm = mode_update_s(m, cfg, env_cfg, 1200)
                    cells.append(f"{t / single:.2f}x ({100 * comm:.0f}%)")
                print(f"| {cl} | {hidden} | {n_adv} | {1000 * single:.1f} | " + " | ".join(cells) + " |", flush=True)
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()


if __name__ == "__main__":
    main()
