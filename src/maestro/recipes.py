"""Recipes: YAML files naming an env, an algorithm, their configs, a seed, a budget and a paper's number.

::

    name: mappo_simple_spread          # runs go to runs/<name>/<time>-s<seed>/
    env: simple_spread
    env_config: {n_agents: 3}          # fields of the env's config dataclass
    algo: mappo
    algo_config: {lr: 7.0e-4}          # fields of the algorithm's Config
    seed: 0
    run: {env_steps: 2000000, num_envs: 128}   # maestro.core.run.RunConfig
    paper:                             # optional: the published number this recipe reproduces
      reference: "Yu et al. 2022 (arXiv 2103.01955), Fig. 4"
      metric: eval/episode_return
      value: -150.0

Files are read with a ``yaml.SafeLoader`` (no Python objects can be built) whose booleans are YAML 1.2's
(``true`` / ``false`` only: ``mode: off`` is the string ``"off"``); numeric fields also accept
YAML 1.2 numbers such as ``1e-3``, which YAML 1.1 reads as strings. Every section is validated into its dataclass by
``maestro.config.build_config``; an unknown key or a wrong type raises a ``ConfigError`` naming the
key and the file. ``--set key=value`` overrides any field by its dotted path
(``algo_config.lr=3e-4``, ``run.env_steps=1e5``, ``seed=2``), the value parsed as YAML.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from maestro.config import ConfigError, build_config, config_to_dict
from maestro.core.run import RunConfig
from maestro.distributed.config import DistributedConfig


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python objects can be built) with YAML 1.2's booleans: only ``true`` /
    ``false``, so that ``distributed.mode=off`` stays the string ``"off"`` (YAML 1.1 reads ``off``,
    ``on``, ``yes``, ``no`` as booleans)."""


_SafeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely (``_SafeLoader``: ``yaml.SafeLoader`` with YAML 1.2 booleans). YAML 1.1 reads
    ``1e-3`` as a string; typed config fields accept such numeric strings (``maestro.config``)."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class PaperRef:
    """A published result a recipe reproduces."""

    reference: str
    """Citation and location of the number (paper, table or figure)."""
    metric: str = "eval/episode_return"
    """The maestro metric comparable to the paper's number."""
    value: float | None = None
    """The paper's number (``null`` when the paper only shows a curve)."""
    note: str = ""
    """How the paper's setting differs from the recipe, if it does."""
    also: dict[str, float] = field(default_factory=dict)
    """Other numbers of the same cell of the paper's table, by maestro metric (e.g.
    ``{eval/success: 0.56, eval/successful_return: 2972.2}``); ``maestro report`` puts each on a row."""
    figure: str = ""
    """The paper's figure this recipe is one curve of (e.g. ``"Li & He 2020, Fig. 2"``): ``maestro
    report`` draws the recipes that name the same figure together, one panel per ``panel``."""
    panel: str = ""
    """The panel of ``figure`` the curve belongs to (e.g. ``"(a) navigation, N = 3"``)."""
    label: str = ""
    """The curve's legend entry in the figure (default: the recipe's algorithm)."""
    curve: str = ""
    """The metric the figure draws against env steps (default: ``metric``; e.g. ``train/episode_return``
    for a recipe that evaluates only at its end)."""
    band: Literal["ci", "range"] = "ci"
    """The shading around the curve's mean over seeds in a figure: ``"ci"`` (the Student-t 95%
    confidence interval of the mean) or ``"range"`` (lowest to highest seed, as Guo & Duan's Figs.
    7–8 shade theirs)."""
    also_figures: dict[str, str] = field(default_factory=dict)
    """Other figures this recipe is a curve of, ``{figure: panel}``, drawn with the same label, curve
    and band (Guo & Duan's Fig. 7 re-draws two of Fig. 6's curves: the Humanoid master and slave)."""


@dataclass(frozen=True)
class RecipeFile:
    """The top level of a recipe file."""

    env: str
    """Registered environment name (``maestro list``)."""
    algo: str
    """Registered algorithm name (``maestro list``)."""
    name: str = ""
    """Run name: runs go to ``<out>/<name>/``. Default: the file's ``<dir>_<stem>``."""
    description: str = ""
    """One line shown by ``maestro list``."""
    env_config: dict[str, Any] = field(default_factory=dict)
    """Fields of the environment's config dataclass."""
    algo_config: dict[str, Any] = field(default_factory=dict)
    """Fields of the algorithm's ``Config``."""
    seed: int = 0
    """Seed of Python, NumPy, torch, the env and the trainer."""
    run: RunConfig = field(default_factory=RunConfig)
    """Budget, evaluation, checkpoints (``maestro.core.run.RunConfig``)."""
    paper: PaperRef | None = None
    """The paper's number this recipe reproduces, if any."""
    distributed: DistributedConfig | None = None
    """Train on Ray (``maestro.distributed``): ``{mode: genetic | data | model | model_sampler, workers: K}``."""


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: the file's fields with the env and algorithm configs built."""

    path: Path
    name: str
    env: str
    algo: str
    env_config: Any
    algo_config: Any
    seed: int
    run: RunConfig
    paper: PaperRef | None
    description: str = ""
    distributed: DistributedConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe as plain data (written as a run's ``config.yaml``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "env": self.env,
            "env_config": config_to_dict(self.env_config),
            "algo": self.algo,
            "algo_config": config_to_dict(self.algo_config),
            "seed": self.seed,
            "run": config_to_dict(self.run),
        }
        if self.paper is not None:
            out["paper"] = config_to_dict(self.paper)
        if self.distributed is not None:
            out["distributed"] = config_to_dict(self.distributed)
        return out


def recipe_roots() -> list[Path]:
    """Where recipe names are looked up: ``$MAESTRO_RECIPES``, ``./recipes`` and the repository's ``recipes/``."""
    roots = []
    if os.environ.get("MAESTRO_RECIPES"):
        roots.append(Path(os.environ["MAESTRO_RECIPES"]))
    roots.append(Path.cwd() / "recipes")
    roots.append(Path(__file__).resolve().parents[2] / "recipes")
    seen, out = set(), []
    for r in roots:
        key = r.resolve() if r.exists() else r
        if key not in seen and r.is_dir():
            seen.add(key)
            out.append(r)
    return out


def list_recipes() -> dict[str, Path]:
    """Recipe names (``<dir>/<stem>``, e.g. ``mappo/simple_spread``) -> file, first root wins."""
    found: dict[str, Path] = {}
    for root in recipe_roots():
        for p in sorted(root.rglob("*.yaml")):
            found.setdefault(p.relative_to(root).with_suffix("").as_posix(), p)
    return found


def resolve_recipe(arg: str | Path) -> Path:
    """A recipe file from a path or a name such as ``mappo/simple_spread``."""
    p = Path(arg)
    if p.is_file():
        return p
    known = list_recipes()
    name = str(arg)[:-5] if str(arg).endswith(".yaml") else str(arg)
    if name in known:
        return known[name]
    from maestro.config import suggest

    raise ConfigError(f"no recipe file or recipe named {str(arg)!r}{suggest(name, known)}; known recipes: {', '.join(known) or 'none'}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (``["a", "b"]``, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. algo_config.lr=3e-4), got {text!r}")
    path = [k for k in key.strip().split(".")]
    if any(not k for k in path):
        raise ConfigError(f"--set {text!r}: empty component in the key {key!r}")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from err
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``key=value`` of ``overrides`` set (nested dicts created)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, k in enumerate(path[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(path[: i + 1])!r} is {nxt!r}, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _build(data: Any, path: Path, where: str) -> Recipe:
    from maestro.registry import algo_entry, env_entry

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a recipe must be a mapping of keys (env, algo, ...), got {type(data).__name__}")
    top = build_config(RecipeFile, data, where=where)
    try:
        env_e = env_entry(top.env)
    except ValueError as err:
        raise ConfigError(f"{where}: key 'env': {err}") from None
    try:
        algo_e = algo_entry(top.algo)
    except ValueError as err:
        raise ConfigError(f"{where}: key 'algo': {err}") from None
    env_cfg = build_config(env_e.config, top.env_config, where=where, prefix="env_config.")
    algo_cfg = build_config(algo_e.config, top.algo_config, where=where, prefix="algo_config.")
    name = top.name or f"{path.parent.name}_{path.stem}"
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(f"{where}: key 'name' must use letters, digits, '_', '-' or '.', got {name!r}")
    return Recipe(path, name, top.env, top.algo, env_cfg, algo_cfg, top.seed, top.run, top.paper, top.description, top.distributed)


def load_recipe(arg: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, validate and override a recipe (a path or a name under ``recipes/``).

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong
            type; the message names the key and the file (and the ``--set`` when it is to blame).
    """
    path = resolve_recipe(arg)
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the recipe: {err}") from None
    if data is None:
        data = {}
    recipe = _build(data, path, str(path))
    if overrides:
        recipe = _build(apply_overrides(data, list(overrides)), path, f"{path} with --set {' '.join(overrides)}")
    return recipe


# ====================================================================== running recipes
class RunDirError(ValueError):
    """A run directory does not exist or is not a maestro run."""


@dataclass
class TrainResult:
    """What ``train_recipe`` / ``resume_run`` return."""

    dir: Path
    policy: Any
    env_steps: int
    stopped: bool
    """True when a signal (or ``request_stop``) ended the run before its budget."""
    stop_signal: int | None
    checkpoint: Path | None


def new_run_dir(out: str | Path, recipe: Recipe) -> Path:
    """``<out>/<name>/<YYYYmmdd-HHMMSS>-s<seed>`` (a numbered suffix if it exists)."""
    import time

    base = Path(out) / recipe.name / f"{time.strftime('%Y%m%d-%H%M%S')}-s{recipe.seed}"
    d, i = base, 1
    while d.exists():
        d = base.with_name(f"{base.name}-{i}")
        i += 1
    return d


def find_run_dir(arg: str | Path) -> Path:
    """A run directory from a path: the run itself, or the newest run below it."""
    p = Path(arg)
    if not p.exists():
        raise RunDirError(f"run directory {p} does not exist")
    if (p / "config.yaml").is_file():
        return p
    runs = sorted((c.parent for c in p.rglob("config.yaml")), key=lambda d: d.stat().st_mtime)
    if not runs:
        raise RunDirError(f"{p} is not a maestro run directory (no config.yaml at or below it)")
    return runs[-1]


def newest_run(path: str | Path) -> Path | None:
    """``find_run_dir(path)``, or None where ``path`` holds no run yet (a grid cell not started)."""
    try:
        return find_run_dir(path)
    except RunDirError:
        return None


def env_factory(recipe: Recipe):
    """``make(num_envs, seed) -> env``: the recipe's env with its config on its device."""
    from maestro.registry import env_entry

    entry = env_entry(recipe.env)
    return lambda num_envs, seed: entry.cls(recipe.env_config, num_envs=num_envs, seed=seed, device=recipe.run.device)


def _execute(recipe: Recipe, directory: Path, resume: bool, progress: bool | None, hooks: tuple = ()) -> TrainResult:
    from maestro.algos import check_compatible
    from maestro.core.run import Run
    from maestro.registry import algo_entry

    make = env_factory(recipe)
    env = make(recipe.run.num_envs, recipe.seed)
    try:
        check_compatible(recipe.algo, env.spec)
    except ValueError as err:
        raise ConfigError(f"{recipe.path}: {err}") from None
    run_cfg = recipe.run if progress is None else _replace(recipe.run, progress=progress)
    run = Run(run_cfg, directory, seed=recipe.seed, config=recipe.to_dict(), make_env=make, resume=resume, hooks=hooks, name=recipe.name)
    with run:
        if recipe.distributed is not None and recipe.distributed.mode != "off":
            from maestro.distributed import train_distributed

            policy = train_distributed(recipe.distributed, recipe.algo, recipe.algo_config, recipe.env, recipe.env_config, env, run, recipe.seed)
        else:
            policy = algo_entry(recipe.algo).train(recipe.algo_config, env, run)
    env.close()
    return TrainResult(directory, policy, run.env_steps, run.stop_requested, run.stop_signal, run.last_checkpoint)


def _replace(cfg: Any, **kw: Any) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def write_config(recipe: Recipe, directory: Path) -> Path:
    """Write the resolved recipe as ``config.yaml`` (atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    tmp = directory / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    tmp.replace(path)
    return path


def train_recipe(recipe: Recipe, out: str | Path = "runs", progress: bool | None = None, hooks: tuple = ()) -> TrainResult:
    """Train ``recipe`` in a new run directory under ``out``."""
    directory = new_run_dir(out, recipe)
    write_config(recipe, directory)
    return _execute(recipe, directory, resume=False, progress=progress, hooks=hooks)


def resume_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), progress: bool | None = None, hooks: tuple = ()) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest valid checkpoint (``--set`` may extend the budget)."""
    from maestro.core.checkpoint import CheckpointError, list_checkpoints

    directory = find_run_dir(run_dir)
    if not list_checkpoints(directory / "checkpoints"):
        raise CheckpointError(f"{directory} has no checkpoint to resume from")
    recipe = load_recipe(directory / "config.yaml", overrides)
    if overrides:
        write_config(recipe, directory)
    return _execute(recipe, directory, resume=True, progress=progress, hooks=hooks)


def load_run_policy(run_dir: str | Path, device: str = "cpu", overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, Any, Path]:
    """The recipe of a run (with ``overrides``, e.g. ``env_config.n_agents=6`` to evaluate on another
    task) and the policy of its newest valid checkpoint (and that checkpoint's path)."""
    import logging

    from maestro.algos import load_policy
    from maestro.core.checkpoint import latest_valid

    directory = find_run_dir(run_dir)
    recipe = load_recipe(directory / "config.yaml", overrides)
    path, payload, skipped = latest_valid(directory / "checkpoints", map_location=device)
    for bad, why in skipped:
        logging.getLogger("maestro").warning("skipping checkpoint %s: %s", bad.name, why)
    return recipe, load_policy(payload["state"]["policy"], device), path
