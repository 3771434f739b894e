"""Reports over finished runs: learning curves (mean and 95% CI over seeds) and paper-style tables.

A run directory holds ``config.yaml`` (the resolved recipe) and ``metrics.jsonl`` (one row per
iteration or evaluation, keyed by the metric namespace of ``maestro.core.run``). Runs are grouped by
recipe name; each group (the seeds of one recipe) gets a PNG of its curves against env steps
(mean over seeds, with a band of the Student-t 95% confidence interval of the mean) and a row in a
Markdown table that puts the final value (mean and 95% CI over seeds; a training metric is averaged
over the last 10% of the run) beside the paper's number when the recipe has one.

Recipes whose ``paper.figure`` (or ``paper.also_figures``) names the same figure are also drawn
together, as the paper drew them: one PNG per figure, a panel per ``paper.panel``, one curve per
recipe (legend ``paper.label``) of its ``paper.curve`` (default ``paper.metric``) shaded by its
``paper.band`` (the 95% CI, or the range of the seeds), with a table of final values of
``paper.metric`` laid out as the figure (a row per panel, a column per curve).

A recipe whose seeds are partly finished (a grid still running, or a seed stopped to be resumed)
is drawn and tabulated from its finished seeds only (``counted``); the tables name the seeds left
out and how far they got. While no seed has finished, every seed counts and is marked unfinished.

The ``paper`` section of a recipe maestro finds by the runs' name (``maestro.recipes.list_recipes``)
replaces the one the runs recorded: it describes the paper, not the run, so a correction or a
figure added to the recipe after its seeds ran applies to them. Runs of a recipe it does not find
keep their own.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maestro.core.evaluate import mean_ci95, t_critical95


@dataclass
class RunData:
    """One run's files, loaded."""

    dir: Path
    config: dict[str, Any]
    rows: list[dict[str, float]] = field(default_factory=list)
    eval: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.dir.parent.name)

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(env_steps, values)`` of the rows that carry ``metric`` (sorted by step)."""
        pts = [(r["env_steps"], r[metric]) for r in self.rows if metric in r and r[metric] is not None and math.isfinite(r[metric])]
        pts.sort()
        if not pts:
            return np.zeros(0), np.zeros(0)
        a = np.asarray(pts, dtype=np.float64)
        return a[:, 0], a[:, 1]

    def metrics(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            for k in r:
                seen.setdefault(k, None)
        return list(seen)


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (holding ``config.yaml``) at or below each path; raises if a path has none."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        found = [p] if (p / "config.yaml").is_file() else sorted(c.parent for c in p.rglob("config.yaml"))
        if not found:
            raise FileNotFoundError(f"{p} holds no run (no config.yaml at or below it)")
        out += [f for f in found if f not in out]
    return out


def load_run(directory: str | Path) -> RunData:
    """Load ``config.yaml``, ``metrics.jsonl`` (or ``metrics.jsonl.gz``, as an archive of finished
    runs keeps it) and (if ``maestro eval`` ran) ``eval.json``."""
    from maestro.recipes import parse_yaml

    d = Path(directory)
    config = parse_yaml((d / "config.yaml").read_text()) or {}
    rows = []
    mpath, zpath = d / "metrics.jsonl", d / "metrics.jsonl.gz"
    text = mpath.read_text() if mpath.exists() else gzip.decompress(zpath.read_bytes()).decode() if zpath.exists() else ""
    if text:
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    ev = json.loads((d / "eval.json").read_text()) if (d / "eval.json").exists() else None
    return RunData(d, config, rows, ev)


def binned(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``y`` averaged over the bin of each point of ``grid`` (bins split halfway between grid points;
    the first and last reach half a spacing beyond the ends), interpolated where a bin holds no
    point: an iteration's noisy training row becomes a short running mean, while a sparse series
    (an evaluation every N steps) is only interpolated. ``x`` sorted; shapes ``(K,)`` -> ``(G,)``."""
    if grid.size == 1:
        return np.interp(grid, x, y)
    half = 0.5 * (grid[1] - grid[0])
    edges = np.concatenate([[grid[0] - half], 0.5 * (grid[1:] + grid[:-1]), [grid[-1] + half]])
    which = np.searchsorted(edges, x, side="right") - 1
    inside = (which >= 0) & (which < grid.size)
    sums = np.bincount(which[inside], weights=y[inside], minlength=grid.size)
    counts = np.bincount(which[inside], minlength=grid.size)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.interp(grid, x, y))


def on_grid(runs: list[RunData], metric: str, points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` of every run that logged it on a common grid of ``points`` env steps, from the
    latest first step to the shortest run's last, each series averaged in bins around the grid
    (``binned``). Returns ``(steps (G,), values (n_runs, G))``; ``n_runs`` is 0 if none logged it."""
    series = [r.series(metric) for r in runs]
    series = [(x, y) for x, y in series if x.size]
    if not series:
        return np.zeros(0), np.zeros((0, 0))
    lo = max(x[0] for x, _ in series)
    hi = min(x[-1] for x, _ in series)
    grid = np.linspace(lo, hi, points) if hi > lo else np.asarray([hi])
    return grid, np.stack([binned(x, y, grid) for x, y in series])


def aggregate(runs: list[RunData], metric: str, points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Mean and Student-t 95% confidence half-width over seeds of ``metric`` against env steps
    (``on_grid``). Returns ``(steps, mean, ci95, n_runs)``, each array ``(G,)``; the half-width is
    ``t_{0.975, n-1} s / sqrt(n)`` at each step (0 for a single run)."""
    grid, ys = on_grid(runs, metric, points)
    n = len(ys)
    if not n:
        return grid, np.zeros(0), np.zeros(0), 0
    ci = t_critical95(n - 1) * ys.std(0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(grid)
    return grid, ys.mean(0), ci, n


def curve_metrics(runs: list[RunData]) -> list[str]:
    """The curves worth plotting: per-group train/eval returns, success / win rates, and the
    per-episode totals of counted events (``touches_per_episode``...)."""
    present: dict[str, None] = {}
    for r in runs:
        for m in r.metrics():
            present.setdefault(m, None)
    keys = [m for m in present if m.startswith(("train/episode_return/", "eval/episode_return/"))]
    keys += [m for m in present if m.split("/", 1)[-1] in ("success", "win") and m.startswith(("train/", "eval/"))]
    keys += [m for m in present if m.endswith("_per_episode") and m.startswith(("train/", "eval/"))]
    return sorted(keys, key=lambda m: (not m.startswith("train"), m))


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _panels(n: int, max_cols: int, width: float, height: float) -> tuple[Any, Any]:
    """A matplotlib figure (Agg) and its ``(rows, cols)`` axes for ``n`` panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


BAND_NAMES = {"ci": "95% CI", "range": "range"}
"""How a figure's title names each ``paper.band``."""


def _draw(
    ax: Any, runs: list[RunData], metric: str, band_alpha: float, colour: str | None = None, label: str | None = None, band: str = "ci"
) -> int:
    """``metric``'s mean over ``runs`` against env steps on ``ax``, shaded over two or more seeds by
    ``band``: ``"ci"``, the 95% CI of the mean (``aggregate``), or ``"range"``, the lowest to the
    highest seed at each step; ``label`` gets `` (n seeds)``. The seeds are ``counted(runs)``: once
    one has finished, the unfinished ones are not drawn. Returns the number of seeds drawn."""
    runs = counted(runs)[0]
    if band == "range":
        x, ys = on_grid(runs, metric)
        n = len(ys)
        mean, lo, hi = (ys.mean(0), ys.min(0), ys.max(0)) if n else (ys, ys, ys)
    else:
        x, mean, ci, n = aggregate(runs, metric)
        lo, hi = mean - ci, mean + ci
    ax.plot(x, mean, lw=1.8, color=colour, label=None if label is None else f"{label} ({_seeds(n)})")
    if n > 1:
        ax.fill_between(x, lo, hi, alpha=band_alpha, color=colour, **({"lw": 0} if colour else {}))
    ax.set_xlabel("env steps")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    return n


def _save(fig: Any, axes: Any, used: int, title: str, out: Path, **title_kw: Any) -> Path:
    """Blank the unused panels, title and write the figure to ``out`` (PNG)."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(title, **title_kw)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_group(runs: list[RunData], out: Path) -> Path | None:
    """One PNG with a panel per curve metric for the seeds of one recipe."""
    metrics = curve_metrics(runs)
    if not metrics:
        return None
    fig, axes = _panels(len(metrics), 3, 4.5, 3.3)
    for ax, m in zip(axes.flat, metrics):
        n = _draw(ax, runs, m, 0.25)
        ax.set_title(f"{m} ({_seeds(n)}, 95% CI)" if n > 1 else f"{m} (1 seed)", fontsize=9)
    return _save(fig, axes, len(metrics), runs[0].name, out)


FINAL_TRAIN_FRACTION = 0.1
"""Share of the run's env steps at its end over which a ``train/`` metric is averaged for the table."""


def final_value(run: RunData, metric: str) -> float | None:
    """The run's final ``metric``: from ``eval.json`` when ``maestro eval`` wrote it; for an
    ``eval/`` metric, the last evaluation; for a ``train/`` metric (one noisy row per iteration),
    the mean over the last ``FINAL_TRAIN_FRACTION`` of the run's env steps."""
    if run.eval and metric.startswith("eval/"):
        key = metric[len("eval/") :]
        summ = run.eval.get("summary", {})
        if key in summ:
            return float(summ[key][0])
    x, y = run.series(metric)
    if not y.size:
        return None
    if metric.startswith("train/"):
        tail = x >= x[-1] - FINAL_TRAIN_FRACTION * x[-1]
        return float(y[tail].mean())
    return float(y[-1])


def final_values(runs: list[RunData], metric: str) -> list[float]:
    """``final_value`` of every run that logged ``metric``."""
    return [v for v in (final_value(r, metric) for r in runs) if v is not None]


def _ci_place(ci: float) -> int:
    """The decimal place of a positive interval's second significant figure once rounded there
    (negative left of the point: -2 for 3287 -> 3300; 0.0996 rounds to 0.10, place 2)."""
    place = 1 - math.floor(math.log10(ci))
    if 1 - math.floor(math.log10(round(ci, place))) < place:  # rounding carried a digit
        place -= 1
    return place


def format_mean_ci(mean: float, ci: float) -> str:
    """``mean ± ci`` as a paper prints it: the interval to two significant figures, the mean to the
    same decimal place but never coarser than units, and no exponents (``3865 ± 3300``,
    ``0.65 ± 0.37``, ``-149 ± 33`` rather than ``3865 ± 3.3e+03``). An interval of 0 (one seed, or
    seeds that agree) keeps the mean's four significant figures; NaNs print as ``nan``."""
    if not (math.isfinite(mean) and math.isfinite(ci)):
        return f"{mean:.4g} ± {ci:.2g}"
    if ci <= 0:
        return f"{mean:.4g} ± 0"
    place = _ci_place(ci)
    d = max(place, 0)
    return f"{mean:.{d}f} ± {round(ci, place):.{d}f}"


def format_value(value: float) -> str:
    """One seed's value in a table: units from 100 up (``4305``), three significant figures below
    (``0.94``, ``12.3``), no exponents."""
    return f"{value:.0f}" if math.isfinite(value) and abs(value) >= 100 else f"{value:.3g}"


def mean_ci_cell(values: list[float]) -> str:
    """``mean ± 95% CI`` of per-seed values, as the tables print it (``format_mean_ci``)."""
    return format_mean_ci(*mean_ci95(np.asarray(values)))


def steps_cell(steps: list[int]) -> str:
    """The env steps the seeds reached: one number, or ``min–max`` if they stopped at different points."""
    if not steps:
        return "0"
    lo, hi = int(min(steps)), int(max(steps))
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def table(groups: dict[str, list[RunData]]) -> str:
    """Markdown table: recipe, env, algo, seeds, env steps, final metric (mean ± 95% CI over seeds),
    paper, and the final metric of each seed (``s0 4305, s1 3267, ...``: with 3 seeds the interval is
    wide, and a reader wants to see whether one seed makes it so). The mean is over the seeds
    ``counted`` keeps (the finished ones once one has finished); the per-seed column lists every
    seed and marks an unfinished one with the steps it reached.

    One row for the recipe's ``paper.metric`` and one for each entry of ``paper.also`` (the other
    numbers of the same cell of the paper's table, e.g. a success rate beside a return). A metric
    a seed never logged (``eval/successful_return`` of a run with no successful episode) is left
    out of that row's mean, and the row says over how many seeds it is."""
    lines = [
        "| recipe | env | algo | seeds | env steps | metric | maestro (mean ± 95% CI) | paper | per seed | reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        cfg = runs[0].config
        paper = _paper(runs)
        metric = _metric(runs)
        steps = steps_cell([r.rows[-1]["env_steps"] for r in runs if r.rows])
        used = counted(runs)[0]
        # the recipe's metric, then the other numbers of the same cell of the paper's table
        for i, (m, pv) in enumerate([(metric, paper.get("value")), *(paper.get("also") or {}).items()]):
            vals = final_values(used, m)
            if i == 0 and not vals and m == "eval/episode_return":
                m = "train/episode_return"
                vals = final_values(used, m)
            if vals:
                ours = mean_ci_cell(vals) + ("" if len(vals) == len(runs) else f" ({len(vals)} of {len(runs)} seeds)")
            else:
                ours = "n/a"
            ordered = sorted(runs, key=lambda r: int(r.config.get("seed", 0)))
            per_seed = ", ".join(
                f"s{r.config.get('seed', '?')} {'–' if v is None else format_value(v)}{'' if is_finished(r) else f' (at {short_steps(reached(r))})'}"
                for r, v in ((r, final_value(r, m)) for r in ordered)
            )
            lines.append(
                f"| {name} | {cfg.get('env', '?')} | {cfg.get('algo', '?')} | {len(runs)} | {steps} | "
                f"{m} | {ours} | {'' if pv is None else f'{pv:.4g}'} | {per_seed} | {paper.get('reference', '')} |"
            )
    return "\n".join(lines) + "\n"


Figure = dict[str, dict[str, list[tuple[str, list[RunData]]]]]
"""``{figure: {panel: [(label, seeds of one recipe), ...]}}``."""


def _paper(runs: list[RunData]) -> dict[str, Any]:
    """The group's ``paper`` section (``write_report`` has put the shipped recipe's in place)."""
    return runs[0].config.get("paper") or {}


def shipped_papers() -> dict[str, dict[str, Any]]:
    """The ``paper`` section of every recipe ``maestro.recipes.list_recipes`` finds, by the run name
    its runs carry (``name``, default ``<dir>_<stem>``); files that do not parse are skipped."""
    import yaml

    from maestro.recipes import list_recipes, parse_yaml

    out: dict[str, dict[str, Any]] = {}
    for key, path in list_recipes().items():
        try:
            data = parse_yaml(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("paper"), dict):
            out.setdefault(str(data.get("name") or key.replace("/", "_")), data["paper"])
    return out


def figures(groups: dict[str, list[RunData]]) -> Figure:
    """The recipes grouped as the paper's figures: by ``paper.figure`` and each of
    ``paper.also_figures``, then by panel (sorted, "(a)" before "(b)"); a curve's label is
    ``paper.label`` or the algorithm."""
    out: Figure = {}
    for runs in groups.values():
        paper = _paper(runs)
        label = paper.get("label") or str(runs[0].config.get("algo", runs[0].name))
        named = {paper["figure"]: paper.get("panel") or ""} if paper.get("figure") else {}
        for fig, panel in {**named, **(paper.get("also_figures") or {})}.items():
            out.setdefault(fig, {}).setdefault(panel or "", []).append((label, runs))
    return {fig: dict(sorted(panels.items())) for fig, panels in out.items()}


def _metric(runs: list[RunData]) -> str:
    """The recipe's ``paper.metric`` (what its final value reports)."""
    return _paper(runs).get("metric") or "eval/episode_return"


def _curve(runs: list[RunData]) -> str:
    """What the figure draws for the recipe: ``paper.curve``, else ``paper.metric``."""
    return _paper(runs).get("curve") or _metric(runs)


def _band(runs: list[RunData]) -> str:
    """How the figure shades the recipe's seeds: ``paper.band`` (``"ci"`` or ``"range"``)."""
    return _paper(runs).get("band") or "ci"


def plot_figure(title: str, panels: dict[str, list[tuple[str, list[RunData]]]], out: Path) -> Path:
    """One PNG: a panel per entry of ``panels``, each curve the mean over its seeds of its recipe's
    ``paper.curve`` (default ``paper.metric``) shaded by its ``paper.band``; a label keeps its colour
    across panels. The title names the band; a curve's legend does when the figure mixes bands."""
    labels = list(dict.fromkeys(label for curves in panels.values() for label, _ in curves))
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    bands = sorted({_band(runs) for curves in panels.values() for _, runs in curves})
    fig, axes = _panels(len(panels), 4, 4.2, 3.4)
    for ax, (panel, curves) in zip(axes.flat, panels.items()):
        for label, runs in curves:
            shown = label if len(bands) == 1 else f"{label}, {BAND_NAMES[_band(runs)]}"
            _draw(ax, runs, _curve(runs), 0.2, colour=colour[label], label=shown, band=_band(runs))
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(_curve(curves[0][1]), fontsize=8)
        ax.legend(fontsize=7)
    shading = f"mean and {BAND_NAMES[bands[0]]} over seeds" if len(bands) == 1 else "mean over seeds, shaded as the legend says"
    return _save(fig, axes, len(panels), f"{title} ({shading})", out, fontsize=11)


def short_steps(n: float) -> str:
    """``4440000`` -> ``4.44M``, ``300000`` -> ``300k``: env steps as a table cell says them."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def reached(run: RunData) -> float:
    """The env steps of the run's last metrics row (0 if it logged none)."""
    return float(run.rows[-1].get("env_steps", 0)) if run.rows else 0.0


def is_finished(run: RunData) -> bool:
    """Whether the run reached its recipe's ``run.env_steps`` (a run whose config names no budget
    counts as finished: nothing says otherwise)."""
    budget = (run.config.get("run") or {}).get("env_steps")
    return not budget or reached(run) >= budget


def counted(runs: list[RunData]) -> tuple[list[RunData], list[RunData]]:
    """``(counted, left_out)``: the seeds a curve and a final value are made of. Once any seed of a
    recipe has finished, its unfinished seeds (still going, or stopped to be resumed) are left out:
    their curves would cut the mean short at the step the least advanced one reached, and their
    final values are not the end of training. While none has finished (a grid in progress) every
    seed counts, and the tables say each is unfinished."""
    done = [r for r in runs if is_finished(r)]
    if not done or len(done) == len(runs):
        return list(runs), []
    return done, [r for r in runs if not is_finished(r)]


def unfinished(runs: list[RunData]) -> list[str]:
    """``s<seed> at <reached> of <budget>`` for every run whose metrics end before its recipe's
    ``run.env_steps`` (``is_finished``), in seed order."""
    out = []
    for r in sorted(runs, key=lambda r: int(r.config.get("seed", 0))):
        if not is_finished(r):
            out.append(f"s{r.config.get('seed', '?')} at {short_steps(reached(r))} of {short_steps(r.config['run']['env_steps'])}")
    return out


def seeds_note(used: list[RunData], left_out: list[RunData], n: int) -> str:
    """What a table cell says about the ``n`` seeds behind its number: how many, and which were
    left out (``counted``'s split into ``used`` and ``left_out``) or are unfinished."""
    if left_out:
        return f"{_seeds(n)}; left out, unfinished: {', '.join(unfinished(left_out))}"
    short = unfinished(used)
    return f"{_seeds(n)}{'; unfinished: ' + ', '.join(short) if short else ''}"


def figure_table(panels: dict[str, list[tuple[str, list[RunData]]]]) -> str:
    """Markdown table laid out as the figure: a row per panel, a column per curve label, each cell
    the final value (``final_value``) as mean ± 95% CI over the seeds the figure draws (``counted``),
    how many, and which have not reached their recipe's budget yet (``unfinished``)."""
    labels = list(dict.fromkeys(label for curves in panels.values() for label, _ in curves))
    lines = ["| panel | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for panel, curves in panels.items():
        cells = dict.fromkeys(labels, "")
        for label, runs in curves:
            used, left_out = counted(runs)
            vals = final_values(used, _metric(runs))
            if vals:
                cells[label] = f"{mean_ci_cell(vals)} ({seeds_note(used, left_out, len(vals))})"
            else:
                cells[label] = "n/a"
        lines.append(f"| {panel} | " + " | ".join(cells.values()) + " |")
    return "\n".join(lines) + "\n"


def figure_caption(panels: dict[str, list[tuple[str, list[RunData]]]]) -> str:
    """What ``figure_table`` holds: the final value of each recipe's ``paper.metric``, and, when the
    figure draws another metric (``paper.curve``), that the table is not the curves' end."""
    curves = [runs for cs in panels.values() for _, runs in cs]
    metrics = sorted({_metric(r) for r in curves})
    drawn = sorted({_curve(r) for r in curves})
    text = f"Final values of {', '.join(f'`{m}`' for m in metrics)}"
    if any(m.startswith("train/") for m in metrics):
        text += f" (a training metric: the mean over the last {FINAL_TRAIN_FRACTION:.0%} of the run)"
    if drawn != metrics:
        text += f"; the figure draws {', '.join(f'`{c}`' for c in drawn)}, so the table is not the curves' end"
    return text + ":"


def write_report(paths: list[str | Path], out: str | Path) -> list[Path]:
    """Curves (one PNG per recipe, and one per paper figure the recipes name) and ``report.md`` for
    the runs at or below ``paths``; returns the files, ``report.md`` first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(d) for d in find_runs(paths)]
    shipped = shipped_papers()
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        if r.name in shipped:
            r.config = {**r.config, "paper": shipped[r.name]}
        groups.setdefault(r.name, []).append(r)
    written: list[Path] = []
    md = ["# maestro report", "", table(groups)]
    for title, panels in figures(groups).items():
        png = plot_figure(title, panels, out / f"figure_{re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_').lower()}.png")
        written.append(png)
        md += [f"## {title}", "", f"![{title}]({png.name})", "", figure_caption(panels), "", figure_table(panels)]
    for name, rs in groups.items():
        png = plot_group(rs, out / f"{name}.png")
        if png is not None:
            written.append(png)
            md += [f"## {name}", "", f"![{name}]({png.name})", "", "Runs: " + ", ".join(f"`{r.dir}`" for r in rs), ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    written.insert(0, report)
    return written
