"""The benchmark scripts' own pieces keep to the library's interfaces (they are run by hand, so
nothing else would notice them drifting): the baseline policies of benchmarks/learning.py act
through ``maestro.core.evaluate`` as any ``Policy`` does."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (dataclasses look their module up there)
    spec.loader.exec_module(mod)
    return mod


def test_learning_reference_returns_order():
    learning = _load("learning")
    rnd = learning.reference_return("random", 16)
    heur = learning.reference_return("heuristic", 16)
    assert heur > rnd + 5.0, (rnd, heur)


# Scripts that run in a Python of their own with packages maestro never depends on (the peer's side
# of a side-by-side timing): their import is checked only where that package is installed.
OUTSIDE_PYTHON = {"smax_worker": "jax"}


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_benchmark_scripts_import(name):
    if name in OUTSIDE_PYTHON:
        pytest.importorskip(OUTSIDE_PYTHON[name])
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


def test_genetic_benchmark_resumes_a_cell_to_a_larger_budget_and_reads_runs_at_the_asked_budget(tmp_path, monkeypatch, capsys):
    from maestro.recipes import load_recipe, train_recipe

    monkeypatch.chdir(tmp_path)
    prey = load_recipe("distributed_maddpg/prey_weak", ["run.env_steps=64", "run.num_envs=4", "run.eval_every=0", "run.checkpoint_every=64"])
    train_recipe(prey, "runs", progress=False)  # the frozen prey: runs/distributed_maddpg_prey_weak/...
    genetic = _load("genetic_maddpg")
    common = ["--prey", "weak", "--modes", "single", "--seeds", "0", "--eval-every", "400", "--checkpoint-every", "400", "--out", "bench"]
    assert genetic.main(common + ["--steps-per-worker", "800"]) == 0
    cell = tmp_path / "bench" / "weak_single_s0"
    [run] = genetic.run_dirs(cell)
    assert genetic.finished(cell, 800) and not genetic.finished(cell, 1600)
    assert genetic.main(common + ["--steps-per-worker", "1600"]) == 0
    assert genetic.run_dirs(cell) == [run]  # resumed in place, not trained again
    assert "resumed to 1,600 env steps" in capsys.readouterr().out
    steps = [r["env_steps"] for r in genetic.read_metrics(cell) if f"eval/{genetic.METRIC}" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 1600
    short = genetic.summarise(tmp_path / "bench", "weak", "single", [0], 800, 2)
    assert short["seeds"] == 1 and short["curves"][0][-1, 0] == 800  # read at 800, not at the run's end
    assert genetic.main(common + ["--steps-per-worker", "1600"]) == 0
    assert "already trained" in capsys.readouterr().out


def test_genetic_benchmark_pairs_seeds_for_the_difference():
    genetic = _load("genetic_maddpg")
    rows = [
        {"prey": "weak", "mode": "single", "seed_ids": [0, 1, 2], "evals": [400.0, 500.0, 450.0]},
        {"prey": "weak", "mode": "genetic", "seed_ids": [0, 2], "evals": [430.0, 470.0]},  # seed 1 unfinished
        {"prey": "strong", "mode": "single", "seed_ids": [0], "evals": [300.0]},
    ]
    d = genetic.paired_difference(rows, "weak")
    assert d["seed_ids"] == [0, 2] and d["diffs"] == [30.0, 20.0]
    # mean 25, s = 7.071, n = 2: t_{0.975,1} * s / sqrt(2) = 12.706 * 5
    assert d["mean"] == 25.0 and abs(d["ci"] - 63.531) < 1e-2
    assert genetic.paired_difference(rows, "strong") is None  # no genetic row


def test_genetic_benchmark_scratch_cells_need_no_frozen_prey(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/distributed_maddpg_prey_* here
    genetic = _load("genetic_maddpg")
    args = ["--prey", "scratch", "--modes", "single", "--seeds", "0", "--steps-per-worker", "800", "--eval-every", "400", "--out", "bench"]
    assert genetic.main(args) == 0
    [run] = genetic.run_dirs(tmp_path / "bench" / "scratch_single_s0")
    assert "name: distributed_maddpg_both_from_scratch" in (run / "config.yaml").read_text()
    assert "| scratch | single | 1 |" in capsys.readouterr().out


def _keys(tree, prefix=""):
    """Every key path of a nested checkpoint dict."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in [f"{prefix}/{k}", *_keys(v, f"{prefix}/{k}")]]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in _keys(v, f"{prefix}/{i}")]
    return []


def _same(a, b) -> bool:
    """Nested checkpoint contents equal, tensors exactly."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def test_multitask_benchmark_resumes_its_cells_and_reports_the_finished_ones(tmp_path, capsys):
    mt = _load("multitask_generalisation")
    fam = mt.FAMILIES["spread"]
    out = tmp_path / "bench"
    out.mkdir()
    small = ("run.num_envs=4",)  # an iteration: 4 copies x 25 steps x 3 tasks = 300 env steps
    cells = mt.grid(fam, 600, 0.5, ["full"], small)
    assert [c.key for c in cells] == ["multitask_full", "mappo_spread6", "maddpg_spread6", "multitask_full_finetune", "multitask_single"]
    # a sitting stopped half-way through the first cell (its run holds a checkpoint at 300 steps)
    assert mt.train_cell(out, mt.replace(cells[0], steps=300), 0)
    first = mt.run_of(out, cells[0], 0)
    assert mt.trained_steps(first) == 300
    archive = tmp_path / "archive"
    args = ["--env-steps", "600", "--finetune-fraction", "0.5", "--seeds", "0", "--ablations", "full", "--episodes", "4", "--set", small[0], "--archive", str(archive)]
    assert mt.main([*args, "--out", str(out)]) == 0
    sittings = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert [(s["cell"], s["from"], s["to"]) for s in sittings] == [
        ("multitask_full", 0, 300), ("multitask_full", 300, 600), ("mappo_spread6", 0, 600), ("maddpg_spread6", 0, 600),
        ("multitask_full_finetune", 0, 300), ("multitask_single", 0, 600),
    ]
    assert mt.run_of(out, cells[0], 0) == first  # resumed in place, not started again
    ft = mt.run_of(out, cells[3], 0)
    ft_cfg = (ft / "config.yaml").read_text()
    assert f"init_from: {first}" in ft_cfg and "  lr: 0.0001\n" in ft_cfg and "  critic_lr: 0.001\n" in ft_cfg  # from the finished run, its policies at a tenth of the rate
    report = (out / "report.md").read_text()
    assert "| multitask (full) | 1 |" in report and "| multitask (full), fine-tuned | 1 |" in report
    # the scale: random play and the scripted heuristic on every size (the heuristic far above random)
    refs = {row.split(" | ")[0].strip("| "): [float(x) for x in row.split(" | ")[2:8]] for row in report.splitlines() if "(reference)" in row}
    assert set(refs) == {"random (reference)", "heuristic (reference)"}
    assert all(h > r + 5.0 for h, r in zip(refs["heuristic (reference)"], refs["random (reference)"])), refs
    assert "Share of the gap from random play" in report
    # the targets paired by seed: the difference lines equal the table's own returns, seed by seed
    res = json.loads((out / "results.json").read_text())["results"]
    joint = res["multitask (full)"]["N=5"]["0"] - res["multitask, N=5 alone"]["N=5"]["0"]
    assert f"- joint training - multitask, N=5 alone (the notes' motivation), at N=5: {joint:.2f} (per seed s0 {joint:+.2f})" in report
    assert "- multitask (full) - mappo, N=6 alone, at N=6:" in report
    gain = res["multitask (full), fine-tuned"]["N=6"]["0"] - res["multitask (full)"]["N=6"]["0"]
    assert f"- the fine-tune's gain: fine-tuned - zero-shot, at N=6: {gain:.2f} (per seed s0 {gain:+.2f})" in report
    assert len(json.loads((out / "results.json").read_text())["psi"]["N=6"]) == 1  # one run's psi(t) per size
    # a second call trains nothing and writes the same table
    assert mt.main([*args, "--out", str(out)]) == 0
    assert len((out / "cells.jsonl").read_text().splitlines()) == len(sittings)
    # the archive: every finished cell with its final checkpoint, the replay buffers left out
    for c in cells:
        [ckpt] = (mt.newest_run(archive / c.key / "s0") / "checkpoints").iterdir()
        kept = torch.load(ckpt, weights_only=True)
        full = torch.load(mt.run_of(out, c, 0) / "checkpoints" / ckpt.name, weights_only=True)
        assert not any(k.endswith("/replay") for k in _keys(kept)) and _same(kept, mt.without_replay(full))
        if c.key.startswith(("multitask", "maddpg")):
            assert any(k.endswith("/replay") for k in _keys(full))  # what was left out
    # a new machine with the archive only: nothing trained again, the same report
    fresh = tmp_path / "fresh"
    assert mt.main([*args, "--out", str(fresh)]) == 0
    assert not (fresh / "cells.jsonl").exists()
    assert (fresh / "report.md").read_text() == report


def test_multitask_wall_clock_sums_the_sittings_of_one_run(tmp_path):
    """Sittings add up; a sitting from env step 0 (a stopped cell restarted on another machine) starts the sum again."""
    mt = _load("multitask_generalisation")
    rows = [("a", 0, 0, 100, 10.0), ("a", 0, 100, 300, 20.0), ("b", 0, 0, 50, 5.0), ("b", 0, 0, 80, 7.0), ("b", 0, 80, 300, 11.0), ("a", 1, 0, 300, 4.0)]
    (tmp_path / "cells.jsonl").write_text("".join(json.dumps({"cell": c, "seed": s, "from": f, "to": t, "wall_s": w, "stopped": t < 300}) + "\n" for c, s, f, t, w in rows))
    assert mt.wall_clock(tmp_path) == {("a", 0): 30.0, ("b", 0): 18.0, ("a", 1): 4.0}
    assert mt.wall_clock(tmp_path / "missing") == {}


def test_recipe_grid_archives_finished_cells_and_skips_them_on_a_new_machine(tmp_path, monkeypatch):
    """A cell finished on one machine is archived (config, metrics, eval; no checkpoints) and is not
    trained again by a grid that starts with an empty ``--out`` beside the archive; a cell stopped
    part-way is archived with its newest checkpoint and resumed from it on the next machine."""
    from maestro.core.checkpoint import checkpoint_name, save_atomic
    from maestro.reports import load_run

    grid = _load("recipe_grid")
    calls = []

    def checkpoint(run, steps):
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_atomic({"run": {"env_steps": steps}, "state": {}}, run / "checkpoints" / checkpoint_name(steps))

    def fake_maestro(*args):
        calls.append(args)
        if args[0] != "train":
            return 0
        if args[1] == "--resume":  # finishes the run it is given
            run = Path(args[2])
            assert (run / "metrics.jsonl").read_text().count("\n") == 1, "the metrics so far came back with the checkpoint"
            checkpoint(run, 10)
            return 0
        out = Path(args[args.index("--out") + 1])
        seed = int(next(a for a in args if a.startswith("--set=seed="))[len("--set=seed="):])
        run = out / "name" / f"t-s{seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"run:\n  env_steps: 10\nseed: {seed}\n")
        (run / "metrics.jsonl").write_text(json.dumps({"env_steps": 5, "train/episode_return": 1.0}) + "\n")
        checkpoint(run, 5)
        if seed == 1:  # stopped by SIGTERM half-way
            return 143
        checkpoint(run, 10)
        return 0

    monkeypatch.setattr(grid, "maestro", fake_maestro)
    archive = tmp_path / "results"
    argv = ["recipe_grid.py", "--recipes", "ms_marl/combat_commnet", "--seeds", "0", "1", "--archive", str(archive)]
    monkeypatch.setattr(sys, "argv", argv + ["--out", str(tmp_path / "machine1")])
    with pytest.raises(SystemExit, match="seed 1 stopped"):
        grid.main()
    assert [c[0] for c in calls] == ["train", "train"]
    done = archive / "combat_commnet" / "s0" / "name" / "t-s0"
    assert sorted(p.name for p in done.iterdir()) == ["config.yaml", "metrics.jsonl.gz"]
    assert load_run(done).rows == [{"env_steps": 5, "train/episode_return": 1.0}]  # the report reads the gzipped metrics
    part = archive / "combat_commnet" / "s1" / "name" / "t-s1"
    assert [p.name for p in (part / "checkpoints").iterdir()] == [checkpoint_name(5)]
    assert len((archive / "cells.jsonl").read_text().splitlines()) == 2

    calls.clear()  # a new machine: nothing under --out, the archive committed beside the code
    monkeypatch.setattr(sys, "argv", argv + ["--out", str(tmp_path / "machine2")])
    grid.main()
    assert [c[:2] for c in calls] == [("train", "--resume"), ("report", str(archive / "combat_commnet"))]
    assert Path(calls[0][2]) == tmp_path / "machine2" / "combat_commnet" / "s1" / "name" / "t-s1"
    assert not (part / "checkpoints").exists(), "finished now: its archive drops the checkpoint"

    calls.clear()
    monkeypatch.setattr(sys, "argv", argv + ["--out", str(tmp_path / "machine3")])
    grid.main()
    assert [c[0] for c in calls] == ["report"]


def test_recipe_grid_passes_over_a_cell_another_grid_holds(tmp_path, monkeypatch, capsys):
    """Two grids on the same ``--out`` (the same command twice, one per core) never train one cell at
    once: a cell whose lock another process holds is passed over, the next cell trained, and the lock of
    a cell this grid trained is free again afterwards."""
    from filelock import FileLock, Timeout

    grid = _load("recipe_grid")
    trained = []

    def fake_maestro(*args):
        if args[0] == "train":
            seed = next(a for a in args if a.startswith("--set=seed="))
            trained.append(seed)
            with pytest.raises(Timeout):  # held while it trains
                FileLock(str(tmp_path / "out" / "combat_commnet" / f"s{seed[-1]}.lock"), timeout=0).acquire()
        return 0

    monkeypatch.setattr(grid, "maestro", fake_maestro)
    monkeypatch.setattr(sys, "argv", ["recipe_grid.py", "--recipes", "ms_marl/combat_commnet", "--seeds", "0", "1", "--out", str(tmp_path / "out")])
    (tmp_path / "out" / "combat_commnet").mkdir(parents=True)
    other = FileLock(str(tmp_path / "out" / "combat_commnet" / "s0.lock"))
    with other:  # another grid is training seed 0
        grid.main()
    assert trained == ["--set=seed=1"]
    assert "ms_marl/combat_commnet seed 0 is held by another grid; passed over" in capsys.readouterr().err
    trained.clear()
    grid.main()  # seed 0 free again (and seed 1 has no checkpoint in this fake, so it is started again)
    assert trained == ["--set=seed=0", "--set=seed=1"]


def test_ppo_peer_combines_rounds_of_several_sittings(tmp_path, capsys):
    peer = _load("mujoco_ppo_peer")
    row = lambda r, who, wall, test: {"round": r, "learner": who, "wall_s": wall, "steps_per_s": 1e6 / wall, "train_return_last20": test - 100, "test_return": test}
    (tmp_path / "r0.json").write_text(json.dumps([row(0, "maestro", 600, 4000), row(0, "sb3", 1200, 5000)]))
    (tmp_path / "r1.json").write_text(json.dumps([row(1, "sb3", 1000, 4400), row(1, "maestro", 700, 4200)]))
    (tmp_path / "r2.json").write_text(json.dumps([{**row(2, "maestro", 450, 4400), "load": 1.5}]))  # a round whose SB3 run never finished
    assert peer.main(["--combine", str(tmp_path / "r1.json"), str(tmp_path / "r0.json"), str(tmp_path / "r2.json")]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and "round" not in line]
    # by round, in the order each round ran; the load where the sitting recorded it
    assert [line.split(" | ")[:3] for line in table] == [["| 0", "maestro", "–"], ["| 0", "sb3", "–"], ["| 1", "sb3", "–"], ["| 1", "maestro", "–"], ["| 2", "maestro", "1.50"]]
    # ratios only over paired rounds: 600/1200 and 700/1000, median 0.60
    assert "per round: 0.50, 0.70 (median 0.60; target <= 0.5)" in out
    t = 12.706204736  # t_{0.975, 1}
    assert f"maestro: test return 4100 ± {t * math.sqrt(2 * 100**2 / 1) / math.sqrt(2):.0f}" in out and "over 2 rounds" in out


def _fig2_run(root, task, algo, seed, curve, budget=1000, groups=None, extra=None):
    """A run of ``matrpo/<task>_<algo>`` whose ``train/team_return`` follows ``curve`` (one row per 100 env
    steps); ``groups`` maps a group to its ``train/episode_return/<group>_sum`` curve, ``extra`` a metric
    to its values."""
    import yaml

    d = root / f"{task}_{algo}" / f"s{seed}" / f"matrpo_{task}_{algo}" / f"t-s{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"name": f"matrpo_{task}_{algo}", "seed": seed, "algo": algo, "run": {"env_steps": budget}}))
    rows = [{"env_steps": 100 * (k + 1), "train/team_return": float(v)} for k, v in enumerate(curve)]
    for group, values in (groups or {}).items():
        for row, v in zip(rows, values):
            row[f"train/episode_return/{group}_sum"] = float(v)
    for metric, values in (extra or {}).items():
        for row, v in zip(rows, values):
            row[metric] = float(v)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_matrpo_findings_read_the_papers_claims_off_the_runs(tmp_path):
    mf = _load("matrpo_findings")
    flat = lambda v: [v] * 10  # noqa: E731  (a final value of v: the last 10 % is the last row)
    for s, (m, c, i) in enumerate([(-100, -60, -190), (-110, -50, -185), (-120, -70, -180)]):
        for algo, v in (("matrpo", m), ("trpo_central", c), ("trpo_independent", i)):
            _fig2_run(tmp_path, "navigation_n3", algo, s, flat(v))
    for s, (m, c, i) in enumerate([(-300, -310, -400), (-320, -290, -410)]):
        for algo, v in (("matrpo", m), ("trpo_central", c), ("trpo_independent", i)):
            _fig2_run(tmp_path, "navigation_n6", algo, s, flat(v))
    # treasure N = 8: independent TRPO peaks at -10 mid-way and ends at -30 (a drop of 20 on each seed)
    for s in range(2):
        _fig2_run(tmp_path, "treasure_n8", "trpo_independent", s, [-40, -20, -10, -10, -15, -20, -25, -25, -28, -30 - s])
    _fig2_run(tmp_path, "treasure_n8", "matrpo", 0, flat(-5), budget=2000)  # unfinished: 1000 of 2000
    runs, skipped = mf.collect([tmp_path])
    assert skipped == ["matrpo_treasure_n8_matrpo s0 at 1k of 2k"]
    rows = {(f[:2], panel[:3]): (numbers, verdict) for f, panel, numbers, verdict in mf.findings(runs)}
    # (a): MATRPO -110 ± 24.8 sits below centralised -60 ± 24.8 (not required at N = 3); its low -134.8 is above -180 + 12.4
    assert rows[("1.", "(a)")][1] == "not met (not required at N = 3)"
    assert rows[("2.", "(a)")] == ("MATRPO -110.0 ± 24.8 (3 seeds); independent -185.0 ± 12.4 (3 seeds)", "met")
    # (b): MATRPO -310 inside centralised -300 ± 127 (2 seeds, t = 12.7)
    assert rows[("1.", "(b)")][1] == "met (required)"
    # the shares of the gap closed, (M - I) / (C - I) against the baselines' means: (a) 85/125, 75/125, 65/125 = 0.60 ± 4.30 * 0.08 / sqrt(3); (b) 105/105, 85/105
    share = rows[("4.", "(a)")][0]
    assert share.startswith("share of the independent-to-centralised gap closed: 0.60 ± 0.20 (3 seeds) -> 0.90 ± 1.21 (2 seeds)"), share
    assert rows[("4.", "(a)")][1] == "met"
    assert rows[("3.", "(c)")] == ("drop from its best window to the last 20.5 ± 6.4 (2 seeds)", "met")
    assert rows[("1.", "(c)")][1] == rows[("4.", "(c)")][1] == "pending"  # MATRPO's only run is unfinished
    # the curve tables: windows of 200 env steps ending at 300 (rows 200, 300) and 900 (rows 800, 900); none before 50
    table = mf.curve_tables(runs, [0.05, 0.3, 0.9], 0.2)
    assert "| algorithm | 50 | 300 | 900 | final (per seed) |" in table
    assert "| `matrpo` | – | -110.0 ± 24.8 | -110.0 ± 24.8 | -110.0 ± 24.8 (3 seeds): s0 -100.0, s1 -110.0, s2 -120.0 |" in table
    t1 = 12.706204736  # t_{0.975, 1}; the finals are the rows at 900 and 1000: -29 and -29.5
    finals = f"{-29.25:.1f} ± {t1 * 0.25:.1f} (2 seeds): s0 -29.0, s1 -29.5"
    assert f"| `trpo_independent` | – | -15.0 ± 0.0 | -26.5 ± 0.0 | {finals} |" in table
    assert sum(line.startswith("| `") for line in table) == 3 + 3 + 1  # MATRPO's unfinished treasure run has no row


def test_matrpo_findings_read_a_variant_of_matrpo_against_the_same_baselines(tmp_path):
    mf = _load("matrpo_findings")
    main, variant = tmp_path / "main", tmp_path / "variant"
    for s, (m, c, i) in enumerate([(-170, -140, -300), (-172, -142, -290), (-168, -141, -310)]):
        for algo, v in (("matrpo", m), ("trpo_central", c), ("trpo_independent", i)):
            _fig2_run(main, "treasure_n8", algo, s, [v] * 10)
        _fig2_run(variant, "treasure_n8", "matrpo", s, [-130 - s] * 10)  # the same recipe, trained otherwise
    _fig2_run(variant, "treasure_n8", "trpo_central", 0, [0] * 10)  # not MATRPO: not a variant, and not counted
    runs, _ = mf.collect([main], {"exact": [variant]})
    assert sorted(runs["treasure_n8"]) == ["exact", "matrpo", "trpo_central", "trpo_independent"]
    assert len(runs["treasure_n8"]["trpo_central"]) == 3
    rows = {(f, panel[:3]): (numbers, verdict) for f, panel, numbers, verdict in mf.findings(runs, ("exact",))}
    assert rows[("1. MATRPO as good as centralised TRPO", "(c)")][1] == "not met (required)"
    assert rows[("1. MATRPO `exact` as good as centralised TRPO", "(c)")] == ("MATRPO `exact` -131.0 ± 2.5 (3 seeds); centralised -141.0 ± 2.5 (3 seeds)", "met (required)")
    assert rows[("2. MATRPO `exact` clearly above independent TRPO", "(c)")][1] == "met"
    assert rows[("4. MATRPO `exact` does not deteriorate with more agents", "(c)")][1] == "pending"  # no N = 12 runs
    assert ("1. MATRPO `exact` as good as centralised TRPO", "(a)") not in rows  # not trained on navigation
    assert rows[("1. MATRPO as good as centralised TRPO", "(a)")][1] == "pending"
    assert any(line.startswith("| `exact` |") for line in mf.curve_tables(runs, [0.5, 1.0], 0.2, ("exact",)))
    # a run found below both a main path and a variant path is the variant's only
    both, _ = mf.collect([tmp_path], {"exact": [variant]})
    assert len(both["treasure_n8"]["matrpo"]) == 3 and len(both["treasure_n8"]["exact"]) == 3
    with pytest.raises(SystemExit):
        mf.main([str(main), "--variant", "matrpo=" + str(variant)])


def test_matrpo_findings_split_the_team_return_by_group(tmp_path):
    """Treasure collection's table of who pays: each group's sum at the first mark and final; panels
    with one group (navigation) have none."""
    mf = _load("matrpo_findings")
    for s in range(2):
        # collectors gain (-50 -> -10 - s), deposits pay (-50 -> -100 - s): the team return falls
        collector, deposit = [-50] * 5 + [-10 - s] * 5, [-50] * 5 + [-100 - s] * 5
        _fig2_run(tmp_path, "treasure_n8", "trpo_independent", s, [c + d for c, d in zip(collector, deposit)], groups={"collector": collector, "deposit": deposit})
        _fig2_run(tmp_path, "navigation_n3", "trpo_independent", s, [-100] * 10, groups={"agent": [-100] * 10})
    runs, _ = mf.collect([tmp_path])
    assert mf.group_metrics(runs["treasure_n8"]["trpo_independent"]) == ["train/episode_return/collector_sum", "train/episode_return/deposit_sum"]
    table = mf.split_tables(runs, 0.3, 0.2)
    assert sum(line.startswith("(") for line in table) == 1 and table[1].startswith("(c) treasure collection, N = 8")
    assert "| algorithm | collector 300 | collector final | deposit 300 | deposit final |" in table
    t1 = 12.706204736  # t_{0.975, 1}: finals -10, -11 and -100, -101
    assert f"| `trpo_independent` | -50.0 ± 0.0 | -10.5 ± {t1 * 0.5:.1f} | -50.0 ± 0.0 | -100.5 ± {t1 * 0.5:.1f} |" in table


def test_matrpo_findings_admm_outcome_by_stretch_of_the_run(tmp_path):
    """Per MATRPO seed and stretch (default: the first 10 %, to 50 %, to the end): the share of negative
    believed gains, their median (an outlier does not move it) and the median residual; baselines have none."""
    mf = _load("matrpo_findings")
    # rows at 100 ... 1000 env steps: stretches (0, 100], (100, 500], (500, 1000]
    gains = [-0.1, 0.001, -0.002, 0.003, 0.004, 0.002, -0.001, 1e5, 0.002, 0.001]
    residual = [0.2, 0.3, 0.3, 0.4, 0.5, 1.0, 2.0, 40.0, 3.0, 1.0]
    _fig2_run(tmp_path, "treasure_n12", "matrpo", 0, [-300] * 10, extra={"loss/surrogate_gain": gains, "loss/consensus_residual": residual})
    _fig2_run(tmp_path, "treasure_n12", "trpo_central", 0, [-300] * 10)
    runs, _ = mf.collect([tmp_path])
    table = mf.admm_tables(runs)
    assert table[1].startswith("(d) treasure collection, N = 12") and sum(line.startswith("(") for line in table) == 1
    assert "| seed | 0–100 | 100–500 | 500–1k |" in table
    # (100, 500]: 0.001, -0.002, 0.003, 0.004 -> 1 of 4 negative, median 0.002, residual median 0.35;
    # (500, 1000]: 0.002, -0.001, 1e5, 0.002, 0.001 -> 1 of 5, median 0.002, residuals median 2.0
    assert "| s0 | 100%, -0.1000, 0.20 | 25%, +0.0020, 0.35 | 20%, +0.0020, 2.00 |" in table
    assert mf.admm_tables({"treasure_n12": {"trpo_central": runs["treasure_n12"]["trpo_central"]}}) == []


def test_matrpo_rounds_measures_the_trainers_own_update(tmp_path):
    """The sweep's update at the recipe's K is, on the first batch, the trainer's first iteration: same
    batch, same advantages, same rounds (its gains are the metrics ``maestro train`` logs)."""
    from maestro.recipes import load_recipe, train_recipe

    mr = _load("matrpo_rounds")
    small = ["run.num_envs=4", "algo_config.rollout_steps=8", "algo_config.hidden=[16]", "algo_config.admm_rounds=6", "run.env_steps=32"]
    rows = mr.round_sweep("matrpo/navigation_n3_matrpo", [2, 6], 1, small)
    assert [r["rounds"] for r in rows] == [2, 6] and all(r["batches"] == 1 and r["negative"] in (0, 1) for r in rows)
    result = train_recipe(load_recipe("matrpo/navigation_n3_matrpo", small), out=tmp_path, progress=False)
    logged = [json.loads(line) for line in (result.dir / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if "loss/surrogate_gain" in m)
    assert rows[1]["believed"] == first["loss/surrogate_gain"] and rows[1]["executed"] == first["loss/team_surrogate_gain"]
    assert rows[1]["kl"] == first["loss/kl"] and rows[1]["disagreement"] == first["loss/consensus_disagreement"]
    assert rows[0]["believed"] != rows[1]["believed"]  # fewer rounds, another update from the same theta_old
    # the executed gain by group (navigation: one group, "agent") is the executed gain, recomputed from the update
    assert list(rows[1]["by_group"]) == ["agent"] and rows[1]["by_group"]["agent"] == pytest.approx(rows[1]["executed"], rel=1e-5, abs=1e-9)
    # treasure collection N = 8: 6 collectors and 2 deposits; the groups' means weighted by their sizes are the executed gain
    (t8,) = mr.round_sweep("matrpo/treasure_n8_matrpo", [4], 1, small)
    assert list(t8["by_group"]) == ["collector", "deposit"] and t8["by_group"]["collector"] != t8["by_group"]["deposit"]
    assert (6 * t8["by_group"]["collector"] + 2 * t8["by_group"]["deposit"]) / 8 == pytest.approx(t8["executed"], rel=1e-5, abs=1e-9)
    files = {p: p.read_bytes() for p in result.dir.rglob("*") if p.is_file()}
    assert any(p.parent.name == "checkpoints" for p in files)
    (again,) = mr.round_sweep(str(result.dir), [6], 1, [])  # from the run's checkpoint: read from a copy
    assert again["batches"] == 1 and math.isfinite(again["believed"])
    assert {p: p.read_bytes() for p in result.dir.rglob("*") if p.is_file()} == files
