"""The ``maestro`` CLI end to end on tiny budgets, recipe validation errors, and SIGTERM + resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maestro.cli import main
from maestro.config import ConfigError
from maestro.core import checkpoint as ckpt
from maestro.recipes import list_recipes, load_recipe

REPO = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny_spread
env: simple_spread
env_config: {n_agents: 3}
algo: mappo
algo_config: {rollout_steps: 5, epochs: 2, hidden: [16]}
seed: 0
run: {env_steps: 400, num_envs: 8, eval_every: 200, eval_episodes: 4, checkpoint_every: 200}
"""


def write(tmp_path, text, name="recipe.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def cli(*args):
    """Run the CLI in a subprocess; returns (exit code, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, "-m", "maestro.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_list_shows_envs_algorithms_and_recipes(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("simple_spread", "mappo", "ippo", "mappo/simple_spread", "ippo/simple_spread", "capabilities"):
        assert word in out


@pytest.mark.parametrize("cmd", [[], ["list"], ["train"], ["eval"], ["render"], ["components"], ["report"], ["demo"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: maestro" in capsys.readouterr().out


def test_train_eval_render_report_end_to_end(tmp_path, capsys):
    recipe = write(tmp_path, TINY)
    out = tmp_path / "runs"
    assert main(["train", str(recipe), "--out", str(out), "--no-progress", "--set", "seed=1"]) == 0
    (run_dir,) = list((out / "tiny_spread").iterdir())
    assert run_dir.name.endswith("-s1")
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "tb", "log.txt"}
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/episode_return" in r for r in rows) and any("eval/episode_return" in r for r in rows)

    assert main(["eval", str(run_dir), "--episodes", "6"]) == 0
    table = capsys.readouterr().out
    assert "episode return" in table and "95% CI" in table and "success rate" in table and "episode length" in table
    summary = json.loads((run_dir / "eval.json").read_text())["summary"]
    assert summary["episode_length"][0] == 25.0

    gif = tmp_path / "ep.gif"
    assert main(["render", str(run_dir), "--out", str(gif)]) == 0
    from PIL import Image

    assert Image.open(gif).n_frames >= 2

    # a second seed, then a report over both
    assert main(["train", str(recipe), "--out", str(out), "--no-progress", "--set", "seed=2"]) == 0
    rep = tmp_path / "report"
    assert main(["report", str(out / "tiny_spread"), "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert "| tiny_spread | simple_spread | mappo | 2 |" in md
    assert (rep / "tiny_spread.png").stat().st_size > 1000


TINY_MS_MARL = """\
name: tiny_ms_marl
env: traffic_junction
env_config: {difficulty: easy}
algo: ms_marl
algo_config: {hidden_size: 8}
seed: 0
run: {env_steps: 160, num_envs: 4, eval_episodes: 4}
"""


def test_components_of_an_ms_marl_run(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", str(write(tmp_path, TINY_MS_MARL)), "--out", str(out), "--no-progress"]) == 0
    (run_dir,) = list((out / "tiny_ms_marl").iterdir())
    png = tmp_path / "fig6b.png"
    assert main(["components", str(run_dir), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a run of another algorithm is refused with a user error, not a traceback
    assert main(["train", str(write(tmp_path, TINY)), "--out", str(out), "--no-progress"]) == 0
    (spread_dir,) = list((out / "tiny_spread").iterdir())
    assert main(["components", str(spread_dir)]) == 2
    assert "MS-MARL policies" in capsys.readouterr().err


def test_report_shows_the_paper_number(tmp_path):
    recipe = write(tmp_path, TINY + "paper: {reference: 'Someone et al. 2020, Table 1', metric: eval/episode_return, value: -42.5, also: {eval/episode_length: 25.5, eval/never_logged: 1.0}}\n")
    assert main(["train", str(recipe), "--out", str(tmp_path / "runs"), "--no-progress", "--set", "run.env_steps=40"]) == 0
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "-42.5" in md and "Someone et al. 2020, Table 1" in md
    # paper.also: one more row per number of the same cell; a metric no run logged is "n/a"
    rows = {line.split(" | ")[5]: line for line in md.splitlines() if "Someone et al." in line}
    assert set(rows) == {"eval/episode_return", "eval/episode_length", "eval/never_logged"}, rows
    assert "| 25 ± 0 | 25.5 |" in rows["eval/episode_length"] and "| n/a | 1 |" in rows["eval/never_logged"]
    # a second seed stopped at another budget: the table shows the range, not a mean
    assert main(["train", str(recipe), "--out", str(tmp_path / "runs"), "--no-progress", "--set", "run.env_steps=80", "--set", "seed=1"]) == 0
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    row = next(line for line in (tmp_path / "rep" / "report.md").read_text().splitlines() if "Someone et al." in line)  # the first: the recipe's metric
    assert "| 2 | 40–80 |" in row, row
    # each seed's own final value, in seed order ("–" where a seed never logged the metric)
    per_seed = {line.split(" | ")[5]: line.split(" | ")[8] for line in (tmp_path / "rep" / "report.md").read_text().splitlines() if "Someone et al." in line}
    assert per_seed["eval/episode_length"] == "s0 25, s1 25" and per_seed["eval/never_logged"] == "s0 –, s1 –", per_seed


@pytest.mark.parametrize(
    "text, words",
    [
        (TINY.replace("epochs: 2", "epochz: 2"), ["algo_config.epochz", "did you mean 'epochs'"]),
        (TINY.replace("env_steps: 400", "env_steps: many"), ["run.env_steps", "integer"]),
        (TINY.replace("n_agents: 3", "n_agents: 3, colour: red"), ["env_config.colour"]),
        (TINY + "budget: 5\n", ["'budget'"]),
        (TINY.replace("algo: mappo", "algo: mapo"), ["'algo'", "mapo", "did you mean 'mappo'"]),
        (TINY.replace("env: simple_spread", "env: simple_sprad"), ["'env'", "simple_sprad"]),
        (TINY.replace("hidden: [16]", "hidden: 16"), ["algo_config.hidden", "list"]),
    ],
)
def test_recipe_errors_name_key_and_file(tmp_path, capsys, text, words):
    recipe = write(tmp_path, text, "bad.yaml")
    assert main(["train", str(recipe), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(recipe) in err and "Traceback" not in err
    for w in words:
        assert w in err
    assert not (tmp_path / "runs").exists()


def test_set_overrides_and_yaml12_floats(tmp_path, capsys):
    recipe = write(tmp_path, TINY)
    r = load_recipe(recipe, ["algo_config.lr=3e-4", "run.env_steps=1e3", "env_config.n_agents=4", "algo_config.hidden=[8, 8]"])
    assert r.algo_config.lr == 3e-4 and r.run.env_steps == 1000 and r.env_config.n_agents == 4 and r.algo_config.hidden == (8, 8)
    with pytest.raises(ConfigError, match=r"--set algo_config.lrr=1: unknown key .algo_config\.lrr"):
        load_recipe(recipe, ["algo_config.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(recipe, ["algo_config.lr"])
    assert main(["train", str(recipe), "--set", "run.num_envs=zero"]) == 2
    assert "run.num_envs" in capsys.readouterr().err
    # YAML 1.2 booleans: `off` is the mode's name, not False (YAML 1.1 would read off/on/yes/no as booleans)
    assert load_recipe(recipe, ["distributed.mode=off"]).distributed.mode == "off"
    from maestro.recipes import parse_yaml

    assert parse_yaml("a: on\nb: true\nc: False\nd: [yes, no]") == {"a": "on", "b": True, "c": False, "d": ["yes", "no"]}


def test_shipped_recipes_are_listed():
    assert {"mappo/simple_spread", "ippo/simple_spread", "mappo/simple_tag"} <= set(list_recipes())


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_shipped_recipe_validates(name):
    from maestro.recipes import parse_yaml
    from maestro.registry import env_names

    path = list_recipes()[name]
    env = parse_yaml(path.read_text()).get("env")
    if env not in env_names():
        pytest.skip(f"{name}: env {env!r} is not registered (yet)")
    load_recipe(path)


def test_user_errors_on_runs_exit_2_without_traceback(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    recipe = write(tmp_path, TINY)
    assert main(["train", str(recipe), "--out", str(tmp_path / "runs"), "--no-progress", "--set", "run.env_steps=40"]) == 0
    (run_dir,) = list((tmp_path / "runs" / "tiny_spread").iterdir())
    for p in ckpt.list_checkpoints(run_dir / "checkpoints"):
        p.write_bytes(p.read_bytes()[:100])
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "Traceback" not in err
    assert main(["render", str(run_dir), "--out", str(tmp_path / "x.gif")]) == 2
    for p in ckpt.list_checkpoints(run_dir / "checkpoints"):
        p.unlink()
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert main(["train", "no/such_recipe"]) == 2
    assert "no recipe" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "void"), "--out", str(tmp_path / "r")]) == 2


def _final(run_dir):
    _, payload, _ = ckpt.latest_valid(run_dir / "checkpoints")
    return payload


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    """A real process: SIGTERM mid-run -> checkpoint + clean exit; resume ends with the same parameters."""
    recipe = write(tmp_path, TINY.replace("env_steps: 400", "env_steps: 3000").replace("eval_every: 200", "eval_every: 0"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    base = [sys.executable, "-m", "maestro.cli", "train", str(recipe), "--no-progress"]
    proc = subprocess.Popen([*base, "--out", str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 120
    def started():  # the first iteration's metrics row is written: training is under way
        return any(m.stat().st_size > 0 for m in (tmp_path / "a").rglob("metrics.jsonl"))

    while time.time() < deadline and not started():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "--resume" in out
    (run_a,) = list((tmp_path / "a" / "tiny_spread").iterdir())
    stopped_at = _final(run_a)["run"]["env_steps"]
    assert 0 < stopped_at < 3000

    code, out, err = cli("train", "--resume", run_a, "--no-progress")
    assert code == 0, err
    code, out, err = cli("train", recipe, "--no-progress", "--out", tmp_path / "b")
    assert code == 0, err
    (run_b,) = list((tmp_path / "b" / "tiny_spread").iterdir())
    a, b = _final(run_a), _final(run_b)
    assert a["run"]["env_steps"] == b["run"]["env_steps"] == 3000
    for part in ("critics",):
        for k in b["state"][part]:
            assert torch.equal(a["state"][part][k], b["state"][part][k]), k
    for k, v in b["state"]["policy"]["weights"].items():
        assert torch.equal(a["state"]["policy"]["weights"][k], v), k


def test_demo_runs_the_ms_marl_combat_pipeline(tmp_path, capsys):
    """`maestro demo` (what `make demo` runs), on a tiny budget: train, eval, render, report and the
    MS-MARL action components all land in the run directory; an unknown recipe without a budget is
    a user error."""
    out = tmp_path / "demo"
    assert main(["demo", "--env-steps", "400", "--out", str(out), "--set", "run.num_envs=4", "--set", "run.progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "ms_marl/combat_ms_marl" in printed
    (run_dir,) = list((out / "ms_marl_combat_ms_marl").iterdir())
    assert json.loads((run_dir / "eval.json").read_text())
    assert (run_dir / "episode.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert (run_dir / "report" / "report.md").exists()
    assert (run_dir / "action_components.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["demo", "ippo/simple_spread", "--out", str(out)]) == 2
    assert "--env-steps" in capsys.readouterr().err


def test_closed_pipe_exits_quietly():
    """`maestro list | head`: the reader is gone before maestro writes; no traceback, SIGPIPE's status."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "maestro.cli", "list"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert proc.returncode == 141
