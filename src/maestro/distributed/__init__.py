"""Distributed training on Ray: Distributed MADDPG (Zhou & Chen, ``papers/002``) and decentralised MATRPO (Li & He, ``papers/004``).

One switch, the ``distributed:`` section of a recipe (``common.DistributedConfig``)::

    maestro train distributed_maddpg/genetic_both_from_scratch --set distributed.workers=4
    maestro train maddpg/simple_tag --set distributed.mode=data --set distributed.workers=2
    maestro train maddpg/simple_tag --set distributed.mode=model --ray-address 127.0.0.1:6379

Modes: ``genetic`` (Distributed Genetic MADDPG, Sec. V; ``genetic.py``), ``data`` (data
parallelism, Sec. IV method 1; ``data_parallel.py``), ``model`` and ``model_sampler`` (a worker per
agent, methods 2 and 3; ``model_parallel.py``); for MATRPO (papers/004) ``decentralised`` (an actor
per agent, only the neighbours' log-ratios cross; ``decentralised.py``). Ray is an optional extra
(``pip install 'maestro-marl[distributed]'``); importing this package does not import Ray.
"""

from __future__ import annotations

from typing import Any

from maestro.distributed.config import DistributedConfig, WorkerLostError

__all__ = ["DistributedConfig", "WorkerLostError", "train_distributed"]


def train_distributed(dcfg: DistributedConfig, algo: str, cfg: Any, env_name: str, env_cfg: Any, env: Any, run: Any, seed: int) -> Any:
    """Train ``algo`` (``maddpg`` or ``ddpg``; ``matrpo`` for ``decentralised``) with ``dcfg.mode`` inside a
    Ray session; returns the policy.

    Ray is started (or joined) for the run and shut down afterwards, also on errors. ``env`` is the
    coordinator's env (its spec, and the env the ``model`` mode steps).
    """
    from maestro.distributed.ray_utils import ray_session

    if dcfg.mode == "decentralised":
        if algo != "matrpo":
            raise ValueError(f"distributed.mode='decentralised' runs MATRPO (algo matrpo), not {algo!r}")
        from maestro.distributed.decentralised import train_decentralised

        with ray_session(dcfg):
            return train_decentralised(dcfg, cfg, env, run, seed)
    if algo not in ("maddpg", "ddpg"):
        raise ValueError(f"distributed.mode={dcfg.mode!r} distributes MADDPG (algo maddpg or ddpg), not {algo!r}")
    centralised = algo == "maddpg"
    device = str(env.device)
    with ray_session(dcfg):
        if dcfg.mode == "genetic":
            from maestro.distributed.genetic import train_genetic

            return train_genetic(dcfg, cfg, centralised, env_name, env_cfg, env.spec, run, env.num_envs, seed, device)
        if dcfg.mode == "data":
            from maestro.distributed.data_parallel import train_data_parallel

            return train_data_parallel(dcfg, cfg, centralised, env_name, env_cfg, env.spec, run, env.num_envs, seed, device)
        if dcfg.mode in ("model", "model_sampler"):
            from maestro.distributed.model_parallel import train_model_parallel

            return train_model_parallel(dcfg, cfg, centralised, env_name, env_cfg, env, run, seed, sampler=dcfg.mode == "model_sampler")
        raise ValueError(f"distributed.mode {dcfg.mode!r} is not a distributed mode (genetic, data, model, model_sampler)")
