"""Built-in algorithms; importing this package registers them. Also: matching algorithms to envs.

Each algorithm registers with ``capabilities`` (``maestro.registry.register_algo``); an env's spec
implies ``requirements``; ``check_compatible`` refuses a mismatch with a message that says what
the env needs and the algorithm lacks.
"""

from __future__ import annotations

from maestro.core.checkpoint import load_policy
from maestro.registry import AlgoEntry, algo_entry
from maestro.spec import EnvSpec

# One import per algorithm family; each registers its algorithms.
from maestro.algos import ppo  # noqa: F401  (ippo, mappo)
from maestro.algos import maddpg  # noqa: F401
from maestro.algos import multitask  # noqa: F401
from maestro.algos import reinforce  # noqa: F401
from maestro.algos import gmezo  # noqa: F401
from maestro.algos import trpo  # noqa: F401  (trpo_central, trpo_independent)
from maestro.algos import matrpo  # noqa: F401
from maestro.algos import transfer  # noqa: F401  (pretraining, multitasking, gradient_momentum)
from maestro.algos import irl  # noqa: F401


class IncompatibleError(ValueError):
    """An algorithm cannot handle an environment (action kind, groups, masks, missing state)."""


def requirements(spec: EnvSpec) -> dict[str, str]:
    """Capabilities an algorithm needs for ``spec``, each with the reason (for error messages)."""
    req: dict[str, str] = {}
    for g, gs in spec.groups.items():
        if gs.discrete:
            req.setdefault("discrete", f"group {g!r} has discrete actions")
        else:
            req.setdefault("continuous", f"group {g!r} has continuous actions")
        if gs.has_action_mask:
            req.setdefault("action_mask", f"group {g!r} has action masks")
    if len(spec.groups) > 1:
        req["multi_group"] = f"it has {len(spec.groups)} groups ({', '.join(spec.groups)})"
    return req


def incompatibility(algo: str | AlgoEntry, spec: EnvSpec) -> str | None:
    """Why ``algo`` (a registered name or an entry) cannot train on ``spec``, or ``None`` if it can."""
    entry = algo if isinstance(algo, AlgoEntry) else algo_entry(algo)
    caps, algo = entry.capabilities, entry.name
    for need, why in requirements(spec).items():
        if need not in caps:
            return f"algorithm {algo!r} cannot train on env {spec.name!r}: {why}, and {algo!r} does not support {need!r} (it supports: {', '.join(sorted(caps))})"
    if "needs_roles" in caps and not {"master", "slave"} <= set(spec.roles):
        return f"algorithm {algo!r} needs an env with master and slave roles (walker2d, humanoid, nas), but env {spec.name!r} has roles {spec.roles}"
    if "needs_teams" in caps and spec.n_agents < 2:
        return f"algorithm {algo!r} coordinates several agents, but env {spec.name!r} has {spec.n_agents} agent"
    if "needs_reward_features" in caps and not spec.has_reward_features:
        return f"algorithm {algo!r} needs a reward linear in features the env exposes (nas), but env {spec.name!r} has none (spec.reward_features is 0)"
    if "needs_state" in caps and not spec.has_state:
        return f"algorithm {algo!r} needs a global state, but env {spec.name!r} has state_shape {spec.state_shape}"
    if "needs_entity_obs" in caps and not spec.has_entity_obs:
        return f"algorithm {algo!r} needs observations as entity tokens, but env {spec.name!r} exposes none (spec.entity_kinds is empty)"
    return None


def check_compatible(algo: str | AlgoEntry, spec: EnvSpec) -> None:
    """Raise ``IncompatibleError`` if ``algo`` cannot train on ``spec``."""
    why = incompatibility(algo, spec)
    if why:
        raise IncompatibleError(why)


__all__ = ["IncompatibleError", "check_compatible", "incompatibility", "load_policy", "requirements"]
