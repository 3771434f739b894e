"""The one extension point: environments and algorithms register here with one decorator each.

    @register_env("simple_spread", config=SpreadConfig)
    class SimpleSpread(BatchedEnv): ...

    env = make_env("simple_spread", num_envs=1024, seed=0, device="cpu", n_agents=3)

Tests are parametrised over the registry, so a newly registered env is checked by ``check_env``
and a newly registered algorithm by the smoke tests without writing new tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from maestro.config import ConfigError, build_config, suggest

# Modules whose import registers the built-in environments and algorithms.
_BUILTIN_MODULES = ("maestro.envs", "maestro.algos")


@dataclass(frozen=True)
class EnvEntry:
    """A registered environment: its class, its config dataclass and a one-line summary."""

    name: str
    cls: type
    config: type
    summary: str


@dataclass(frozen=True)
class AlgoEntry:
    """A registered algorithm.

    Attributes:
        name: registry name (``mappo``, ``ms_marl``...).
        train: ``train(cfg, env, run) -> Policy``.
        config: the algorithm's frozen Config dataclass.
        capabilities: what it can handle (``discrete``, ``continuous``, ``recurrent``,
            ``needs_state``, ``on_policy``...), matched against an env's spec.
        summary: one line for ``maestro list``.
    """

    name: str
    train: Callable[..., Any]
    config: type
    capabilities: frozenset[str] = field(default_factory=frozenset)
    summary: str = ""


@dataclass(frozen=True)
class Smoke:
    """An algorithm's smoke settings, declared on its Config as ``SMOKE: ClassVar[Smoke]`` and used by
    ``maestro.algos.check.check_algo`` (the algorithms' conformance suite, run over the registry).

    Attributes:
        config: overrides of the Config's defaults, small enough that a few iterations on a handful
            of env copies really update every network (small networks and batches, a short warm-up).
        num_envs: env copies ``B`` of the check's runs.
        iterations: iterations of each run (>= 2, and updates must have started before the last).
        stop_at: the iteration after which the resume check interrupts a run (``1 <= stop_at < iterations``).
    """

    config: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 4
    iterations: int = 2
    stop_at: int = 1


_ENVS: dict[str, EnvEntry] = {}
_ALGOS: dict[str, AlgoEntry] = {}
_loaded = False


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def register_env(name: str, *, config: type) -> Callable[[type], type]:
    """Class decorator registering a batched env under ``name`` with its config dataclass.

    The class is constructed as ``cls(cfg, num_envs=..., seed=..., device=...)``.
    """

    def deco(cls: type) -> type:
        if name in _ENVS and _ENVS[name].cls is not cls:
            raise ValueError(f"environment {name!r} is already registered by {_ENVS[name].cls.__qualname__}")
        _ENVS[name] = EnvEntry(name, cls, config, _first_line(cls.__doc__))
        cls.registered_name = name
        return cls

    return deco


def register_algo(
    name: str, *, config: type, capabilities: frozenset[str] | set[str] = frozenset(), summary: str = ""
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering an algorithm's ``train`` function under ``name``."""

    def deco(train: Callable[..., Any]) -> Callable[..., Any]:
        if name in _ALGOS and _ALGOS[name].train is not train:
            raise ValueError(f"algorithm {name!r} is already registered")
        _ALGOS[name] = AlgoEntry(name, train, config, frozenset(capabilities), summary or _first_line(train.__doc__))
        return train

    return deco


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # a package not written yet (e.g. no algorithms)
            if err.name != mod:
                raise


def env_names() -> list[str]:
    """Names of all registered environments, sorted."""
    _load_builtins()
    return sorted(_ENVS)


def algo_names() -> list[str]:
    """Names of all registered algorithms, sorted."""
    _load_builtins()
    return sorted(_ALGOS)


def env_entry(name: str) -> EnvEntry:
    """The registry entry of ``name``; a ``ValueError`` lists the valid names on a typo."""
    _load_builtins()
    if name not in _ENVS:
        raise ValueError(f"unknown environment {name!r}{suggest(name, _ENVS)}; registered: {', '.join(sorted(_ENVS))}")
    return _ENVS[name]


def algo_entry(name: str) -> AlgoEntry:
    """The registry entry of algorithm ``name``; a ``ValueError`` lists the valid names on a typo."""
    _load_builtins()
    if name not in _ALGOS:
        raise ValueError(f"unknown algorithm {name!r}{suggest(name, _ALGOS)}; registered: {', '.join(sorted(_ALGOS))}")
    return _ALGOS[name]


def make_env_config(name: str, **kwargs: Any) -> Any:
    """The validated config dataclass of env ``name`` from keyword overrides."""
    entry = env_entry(name)
    try:
        return build_config(entry.config, kwargs, where=f"make_env({name!r})")
    except ConfigError:
        raise


def make_env(name: str, num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu", **kwargs: Any):
    """Create ``num_envs`` batched copies of the registered environment ``name``.

    Args:
        name: registered name (``maestro list`` shows them).
        num_envs: number of env copies ``B`` stepped at once (>= 1).
        seed: seed of the env's random generator (initial states, entry processes...).
        device: torch device holding every tensor the env exchanges.
        **kwargs: fields of the env's config dataclass; an unknown key is a ``ValueError``
            naming it and listing the valid ones.
    """
    entry = env_entry(name)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"make_env({name!r}): num_envs must be an integer >= 1, got {num_envs!r}")
    cfg = make_env_config(name, **kwargs)
    return entry.cls(cfg, num_envs=num_envs, seed=seed, device=device)
