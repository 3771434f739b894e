"""The benchmark scripts' own pieces keep to the library's interfaces (they are run by hand, so
nothing else would notice them drifting): the baseline policies of benchmarks/learning.py act
through ``maestro.core.evaluate`` as any ``Policy`` does."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_learning_reference_returns_order():
    learning = _load("learning")
    rnd = learning.reference_return("random", 16)
    heur = learning.reference_return("heuristic", 16)
    assert heur > rnd + 5.0, (rnd, heur)


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_benchmark_scripts_import(name):
    _load(name)  # a script whose imports broke fails here, not in front of a user
