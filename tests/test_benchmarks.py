"""The benchmark scripts' own pieces keep to the library's interfaces (they are run by hand, so
nothing else would notice them drifting): the baseline policies of benchmarks/learning.py act
through ``maestro.core.evaluate`` as any ``Policy`` does."""

import importlib.util
import json
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


def test_table1_runs_the_three_route_cells_and_skips_models_without_a_recipe(tmp_path, capsys):
    table1 = _load("ms_marl_table1")
    out = tmp_path / "cells.json"
    argv = ["--tasks", "traffic_junction_3routes", "--models", "independent", "commnet", "ms_marl", "--tj-steps", "1", "--eval-episodes", "2", "--json", str(out)]
    assert table1.main(argv) == 0
    cells = json.loads(out.read_text())
    assert [c["model"] for c in cells] == ["commnet", "ms_marl"]  # no 3-route recipe for independent
    assert [c["paper"] for c in cells] == [0.94, 0.96] and {c["metric"] for c in cells} == {"success"}
    assert all(c["batches"] == 1 and 0.0 <= c["mean"] <= 1.0 for c in cells)
    assert "no recipe ms_marl/traffic_junction_3routes_independent: skipped" in capsys.readouterr().out
