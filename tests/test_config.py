"""Typed configs and the registry: unknown keys, wrong types and typos fail naming the key."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from maestro.config import ConfigError, build_config, config_to_dict, field_docs
from maestro.registry import env_entry, make_env


@dataclass(frozen=True)
class Inner:
    hidden: int = 64
    """hidden units"""


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-3
    """learning rate"""
    epochs: int = 4
    """epochs per update"""
    mode: Literal["a", "b"] = "a"
    """mode"""
    layers: tuple[int, ...] = (64, 64)
    """layer sizes"""
    seed: int | None = None
    """optional seed"""
    inner: Inner = field(default_factory=Inner)
    """nested"""

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def test_build_and_coerce():
    c = build_config(Cfg, {"lr": 1, "layers": [8, 4], "inner": {"hidden": 3}, "seed": 5})
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert c.layers == (8, 4) and c.inner.hidden == 3 and c.seed == 5
    assert config_to_dict(c)["layers"] == [8, 4]


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"lrr": 0.1}, "'lrr' (did you mean 'lr'?)"),
        ({"lr": "fast"}, "'lr' expects a number"),
        ({"epochs": 2.5}, "'epochs' expects an integer"),
        ({"epochs": True}, "'epochs' expects an integer"),
        ({"mode": "c"}, "'mode' must be one of ['a', 'b']"),
        ({"layers": 3}, "'layers' expects a list"),
        ({"inner": {"hiden": 3}}, "'inner.hiden'"),
        ({"epochs": 0}, "epochs must be >= 1"),
    ],
)
def test_errors_name_key_and_source(values, needle):
    with pytest.raises(ConfigError) as err:
        build_config(Cfg, values, where="recipe.yaml")
    assert needle in str(err.value) and "recipe.yaml" in str(err.value)


def test_field_docs():
    docs = field_docs(Cfg)
    assert docs["lr"] == "learning rate" and docs["inner"] == "nested"


def test_unknown_env_lists_names():
    with pytest.raises(ValueError) as err:
        make_env("simple_sprad")
    msg = str(err.value)
    assert "simple_sprad" in msg and "registered:" in msg


def test_num_envs_validated():
    name = env_entry("simple_spread").name
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_envs"):
            make_env(name, num_envs=bad)


def test_unknown_env_keyword_lists_valid():
    with pytest.raises(ValueError) as err:
        make_env("simple_spread", n_agent=3)
    assert "n_agent" in str(err.value) and "valid keys" in str(err.value)


def test_optional_section_reports_the_sections_own_error():
    """A ``Section | None`` field given a mapping the section rejects names the bad key and value, not
    the union's type (the recipe's ``distributed:`` section is one)."""
    from maestro.distributed.config import DistributedConfig

    @dataclass(frozen=True)
    class Outer:
        distributed: DistributedConfig | None = None

    with pytest.raises(ConfigError, match=r"distributed.agents_per_worker must be >= 1, got 0"):
        build_config(Outer, {"distributed": {"mode": "model", "agents_per_worker": 0}}, where="r.yaml")
    with pytest.raises(ConfigError, match=r"'distributed.mode' must be one of .*got 'modell'"):
        build_config(Outer, {"distributed": {"mode": "modell"}}, where="r.yaml")
    with pytest.raises(ConfigError, match=r"'distributed' expects a mapping of DistributedConfig fields, got 3"):
        build_config(Outer, {"distributed": 3}, where="r.yaml")
    assert build_config(Outer, {"distributed": None}).distributed is None
