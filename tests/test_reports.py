"""`maestro.reports`: binned curves, the 95% CI over seeds, and a paper figure drawn from the
recipes that name it (runs written by hand, so the expected numbers are known)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from maestro.cli import main
from maestro.reports import aggregate, binned, figures, load_run


def test_binned_averages_each_bin_and_interpolates_empty_ones():
    x = np.array([0.0, 1.0, 2.0, 9.0, 10.0])
    y = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    grid = np.array([0.0, 5.0, 10.0])  # bins [-2.5, 2.5), [2.5, 7.5), [7.5, 12.5]
    out = binned(x, y, grid)
    # first bin: mean of 1, 3, 5; middle bin empty: interpolated at 5 between (2, 5) and (9, 7); last: mean of 7, 9
    np.testing.assert_allclose(out, [3.0, 5.0 + 2.0 * 3.0 / 7.0, 8.0])


def write_run(root, name, seed, values, paper=None, algo="matrpo", steps_per_row=100):
    d = root / name / f"s{seed}"
    d.mkdir(parents=True)
    cfg = {"name": name, "env": "simple_spread", "algo": algo, "seed": seed}
    if paper is not None:
        cfg["paper"] = paper
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"env_steps": (i + 1) * steps_per_row, "train/team_return": float(v)} for i, v in enumerate(values)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_aggregate_gives_the_student_t_interval_over_seeds(tmp_path):
    # three seeds with constant curves 1, 2, 6: mean 3, s = sqrt(7), t_{0.975,2} = 4.3027
    runs = [load_run(write_run(tmp_path, "r", s, [v] * 10)) for s, v in enumerate([1.0, 2.0, 6.0])]
    x, mean, ci, n = aggregate(runs, "train/team_return", points=5)
    assert n == 3 and x.shape == mean.shape == ci.shape == (5,)
    np.testing.assert_allclose(x, np.linspace(100, 1000, 5))
    np.testing.assert_allclose(mean, 3.0)
    np.testing.assert_allclose(ci, 4.302653 * math.sqrt(7.0) / math.sqrt(3.0), rtol=1e-5)
    # one seed: its curve, no band
    _, mean1, ci1, n1 = aggregate(runs[:1], "train/team_return", points=5)
    assert n1 == 1 and np.all(ci1 == 0) and np.allclose(mean1, 1.0)


def paper(panel, label):
    return {"reference": "Someone 2020", "metric": "train/team_return", "figure": "Someone 2020, Fig. 3", "panel": panel, "label": label}


def test_recipes_naming_a_figure_are_drawn_together_with_a_table_laid_out_as_it(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):
        write_run(runs, "task_b_ours", seed, [10.0 + seed] * 20, paper("(b) big task", "ours"))
        write_run(runs, "task_a_ours", seed, [1.0 + seed] * 20, paper("(a) small task", "ours"))
        write_run(runs, "task_a_theirs", seed, [-5.0] * 20, paper("(a) small task", "theirs"), algo="trpo_central")
    write_run(runs, "unrelated", 0, [0.0] * 20, {"reference": "Other 2021", "metric": "train/team_return"})

    groups = {}
    for d in sorted(p.parent for p in runs.rglob("config.yaml")):
        r = load_run(d)
        groups.setdefault(r.name, []).append(r)
    figs = figures(groups)
    assert list(figs) == ["Someone 2020, Fig. 3"]  # the recipe naming no figure is not in one
    panels = figs["Someone 2020, Fig. 3"]
    assert list(panels) == ["(a) small task", "(b) big task"]  # sorted, whatever the order on disk
    assert [label for label, _ in panels["(a) small task"]] == ["ours", "theirs"]

    out = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    png = out / "figure_someone_2020_fig_3.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## Someone 2020, Fig. 3" in md and f"]({png.name})" in md
    # the figure's table: a row per panel, a column per label; seeds 1, 2, 3 -> 2 ± t * 1 / sqrt(3)
    head = md.index("| panel | ours | theirs |")
    table = md[head:].split("\n\n")[0].splitlines()
    assert 4.302653 / math.sqrt(3) == pytest.approx(2.484, abs=1e-3)
    assert table[2] == "| (a) small task | 2.0 ± 2.5 (3 seeds) | -5 ± 0 (3 seeds) |"
    assert table[3] == "| (b) big task | 11.0 ± 2.5 (3 seeds) |  |"


@pytest.mark.parametrize(
    "mean, ci, text",
    [
        (3865.3, 3287.0, "3865 ± 3300"),  # the interval to 2 significant figures, the mean to units
        (0.65333, 0.3712, "0.65 ± 0.37"),
        (-149.04, 32.9, "-149 ± 33"),
        (11.5, 0.0996, "11.50 ± 0.10"),  # rounding the interval carries a digit
        (0.001234, 0.000456, "0.00123 ± 0.00046"),
        (123456.7, 12.3, "123457 ± 12"),
        (-5.0, 0.0, "-5 ± 0"),  # one seed
        (float("nan"), float("nan"), "nan ± nan"),
    ],
)
def test_mean_ci_prints_as_a_paper_table_does(mean, ci, text):
    from maestro.reports import format_mean_ci

    assert format_mean_ci(mean, ci) == text


def test_a_figure_draws_paper_curve_and_tabulates_paper_metric(tmp_path):
    from maestro.reports import _curve, _metric, figure_caption, figure_table

    p = {**paper("(a) small task", "ours"), "metric": "eval/episode_return", "curve": "train/team_return"}
    runs = [load_run(write_run(tmp_path, "r", s, [float(s)] * 10, p)) for s in range(2)]
    assert _curve(runs) == "train/team_return" and _metric(runs) == "eval/episode_return"
    x, mean, _, n = aggregate(runs, _curve(runs), points=3)
    assert n == 2 and np.allclose(mean, 0.5)
    # the runs never evaluated: the table says so instead of showing the curve's end as the result
    assert "| (a) small task | n/a |" in figure_table({"(a) small task": [("ours", runs)]})
    # and the caption says the table is the paper's metric, not the end of the drawn curve
    caption = figure_caption({"(a) small task": [("ours", runs)]})
    assert caption.startswith("Final values of `eval/episode_return`") and "draws `train/team_return`" in caption
    same = {**p, "curve": "train/team_return", "metric": "train/team_return"}
    trained = [load_run(write_run(tmp_path, "t", s, [float(s)] * 10, same)) for s in range(2)]
    assert figure_caption({"(a)": [("ours", trained)]}) == "Final values of `train/team_return` (a training metric: the mean over the last 10% of the run):"


class _Axes:
    """Records what ``_draw`` puts on a matplotlib axis."""

    def __init__(self):
        self.lines, self.bands = [], []

    def plot(self, x, y, **kw):
        self.lines.append((np.asarray(x), np.asarray(y), kw.get("label")))

    def fill_between(self, x, lo, hi, **kw):
        self.bands.append((np.asarray(lo), np.asarray(hi)))

    def __getattr__(self, name):  # labels, ticks, grid
        return lambda *a, **k: None


def test_a_range_band_spans_the_lowest_to_the_highest_seed_and_a_ci_band_the_t_interval(tmp_path):
    from maestro.reports import _draw

    runs = [load_run(write_run(tmp_path, "r", s, [v] * 10)) for s, v in enumerate([1.0, 2.0, 6.0])]
    ax = _Axes()
    assert _draw(ax, runs, "train/team_return", 0.2, label="ours", band="range") == 3
    (lo, hi), = ax.bands
    np.testing.assert_allclose(lo, 1.0)
    np.testing.assert_allclose(hi, 6.0)
    np.testing.assert_allclose(ax.lines[0][1], 3.0)
    assert ax.lines[0][2] == "ours (3 seeds)"
    ax = _Axes()
    _draw(ax, runs, "train/team_return", 0.2, band="ci")
    (lo, hi), = ax.bands
    np.testing.assert_allclose(hi - 3.0, 4.302653 * math.sqrt(7.0) / math.sqrt(3.0), rtol=1e-5)


def test_a_recipe_is_drawn_in_every_figure_it_names(tmp_path):
    runs = tmp_path / "runs"
    fig7 = {"Guo & Duan, Fig. 7": "Humanoid"}
    for seed in range(2):
        write_run(runs, "master", seed, [float(seed)] * 20, {**paper("(a) small task", "master"), "band": "range", "also_figures": fig7})
        write_run(runs, "slave", seed, [5.0] * 20, {**paper("(a) small task", "slave"), "also_figures": fig7})
    groups = {}
    for d in sorted(p.parent for p in runs.rglob("config.yaml")):
        r = load_run(d)
        groups.setdefault(r.name, []).append(r)
    figs = figures(groups)
    assert set(figs) == {"Someone 2020, Fig. 3", "Guo & Duan, Fig. 7"}
    assert [label for label, _ in figs["Guo & Duan, Fig. 7"]["Humanoid"]] == ["master", "slave"]
    out = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Guo & Duan, Fig. 7" in md and (out / "figure_guo_duan_fig_7.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_of_a_shipped_recipe_take_its_current_paper_section(tmp_path, monkeypatch):
    # runs made before the recipe named Fig. 7 (their config has no also_figures) are drawn in it
    root = tmp_path / "recipes" / "fam"
    root.mkdir(parents=True)
    (root / "master.yaml").write_text(
        "env: simple_spread\nalgo: mappo\npaper:\n  reference: Someone 2020\n  metric: train/team_return\n"
        "  figure: 'Someone 2020, Fig. 3'\n  also_figures: {'Someone 2020, Fig. 7': both}\n"
    )
    (root / "broken.yaml").write_text("paper: [unclosed\n")  # skipped, not fatal
    monkeypatch.setenv("MAESTRO_RECIPES", str(tmp_path / "recipes"))
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(runs, "fam_master", seed, [1.0] * 20, paper("", "old label"))
    out = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Someone 2020, Fig. 7" in md and "## Someone 2020, Fig. 3" in md
    assert "| panel | matrpo |" in md and "old label" not in md  # the shipped section has no label: the run's algorithm


def test_an_unknown_band_is_refused_naming_the_key(tmp_path):
    from maestro.config import ConfigError
    from maestro.recipes import load_recipe

    f = tmp_path / "r.yaml"
    f.write_text("env: simple_spread\nalgo: mappo\npaper: {reference: x, band: minmax}\n")
    with pytest.raises(ConfigError, match=r"paper\.band.*'ci', 'range'"):
        load_recipe(str(f))


def _budgeted(tmp_path, name, seed, values, budget=1000):
    """A run of ``len(values)`` rows of 100 env steps whose recipe's budget is ``budget``."""
    d = write_run(tmp_path, name, seed, values, paper={"metric": "train/team_return"})
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["run"] = {"env_steps": budget}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    return load_run(d)


def test_a_figure_table_names_the_seeds_that_have_not_reached_their_budget(tmp_path):
    from maestro.reports import figure_table, short_steps

    # budget 1000 env steps: seeds 0 and 2 finished (values 0 and 2), seed 1 stopped at 400 (value 50)
    runs = [_budgeted(tmp_path, "r", s, [v] * n) for s, v, n in ((0, 0.0, 10), (1, 50.0, 4), (2, 2.0, 10))]
    text = figure_table({"(b) task": [("ours", runs)]})
    # the unfinished seed is left out of the mean (1 ± 13, not 17 ± ...), and the cell says so
    assert "| 1 ± 13 (2 seeds; left out, unfinished: s1 at 400 of 1k) |" in text
    assert "unfinished" not in figure_table({"(b) task": [("ours", [runs[0], runs[2]])]})
    # while no seed has finished, every seed counts and each is named unfinished
    going = [_budgeted(tmp_path, "g", s, [float(s)] * n) for s, n in ((0, 3), (1, 4))]
    assert "(2 seeds; unfinished: s0 at 300 of 1k, s1 at 400 of 1k) |" in figure_table({"(b)": [("ours", going)]})
    assert [short_steps(n) for n in (4_440_000, 300_000, 5e6, 999)] == ["4.44M", "300k", "5M", "999"]


def test_an_unfinished_seed_does_not_cut_the_finished_seeds_curve_short(tmp_path):
    from maestro.reports import _draw, table

    finished = _budgeted(tmp_path, "r", 0, [1.0] * 10)
    started = _budgeted(tmp_path, "r", 1, [9.0] * 2)  # 200 of 1000 steps
    ax = _Axes()
    assert _draw(ax, [finished, started], "train/team_return", 0.2, label="ours") == 1
    (x, y, label), = ax.lines
    assert x[-1] == 1000 and np.allclose(y, 1.0) and label == "ours (1 seed)" and not ax.bands
    # the recipe table: the mean over the finished seed, every seed listed, the unfinished one marked
    row = table({"r": [finished, started]}).splitlines()[2]
    assert "| 1 ± 0 (1 of 2 seeds) |" in row and "s0 1, s1 9 (at 200) |" in row
