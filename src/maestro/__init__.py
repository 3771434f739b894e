"""maestro: batched multi-agent reinforcement learning.

    import maestro
    env = maestro.make_env("simple_spread", num_envs=1024, seed=0, n_agents=3)
"""

from maestro.envs.api import BatchedEnv, StepOut, random_actions
from maestro.registry import algo_names, env_names, make_env, register_algo, register_env
from maestro.spec import EnvSpec, GroupSpec

__version__ = "0.1.0"

__all__ = [
    "BatchedEnv",
    "EnvSpec",
    "GroupSpec",
    "StepOut",
    "algo_names",
    "env_names",
    "make_env",
    "random_actions",
    "register_algo",
    "register_env",
]
