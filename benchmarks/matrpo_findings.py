"""The findings of Li & He 2020 (papers/004, Sec. VI-B, Fig. 2), each read off the runs as met, not met
or pending, with the numbers it rests on.

    python benchmarks/matrpo_findings.py benchmarks/results/matrpo_fig2a benchmarks/results/matrpo_fig2a_cg10 \
        benchmarks/results/matrpo_fig2
    python benchmarks/matrpo_findings.py RUNS... --out findings.md
    python benchmarks/matrpo_findings.py benchmarks/results/matrpo_fig2 \
        --variant matrpo_exact=benchmarks/results/matrpo_t8_pc_rho02

Below the findings, a table per panel of the learning curves at marks (``--marks``, fractions of the
budget: 250k, 500k, 1M, 2M, 2.5M and 5M of the recipes' 5M), each the mean of the iterations in the
``--window`` (2 % of the budget: the 10 iterations, 100k env steps, ending at the mark) as mean ± 95 %
interval over the finished seeds, and each seed's final value: the tables docs/matrpo.md shows. On
treasure collection, a last table splits the team return into the collectors' and the deposits'
returns, at the first mark and final: which group's reward an algorithm trades for which. Last, per
panel, each MATRPO seed's ADMM outcome per iteration from its own metrics (``admm_tables``).

The runs are found below the given paths (``maestro report``'s rule: directories holding a
``config.yaml``) and grouped by panel and algorithm from their recipe names
(``matrpo_<task>_<algo>``, the shipped ``recipes/matrpo/``). Each run's value is its
``train/team_return`` averaged over the last 10 % of its env steps (the figure's metric and
``maestro report``'s final value); a run that has not reached its recipe's budget is left out, and a
panel with fewer than 2 finished seeds of an algorithm is pending. Intervals are 95 % Student-t
intervals over seeds.

``--variant LABEL=PATH`` (repeatable) reports the MATRPO runs below ``PATH`` as an algorithm of their
own, ``LABEL`` (a MATRPO recipe trained with other settings, e.g. ``--set algo_config.rho=0.2``): a row
of its own in the curve tables, and findings 1, 2 and 4 read for it as for MATRPO, against the same
baselines. A run below such a path is counted only as the variant.

The paper states its findings in words (Sec. VI-B); the readings taken here:

1. *MATRPO performs practically as well as centralised TRPO, apart from navigation N = 3*: met when
   MATRPO's mean lies inside centralised TRPO's 95 % interval or above it (issue 21: "within its
   CI"). N = 3 is reported but not required.
2. *Independent TRPO performs poorly*: met when MATRPO's interval lies wholly above independent
   TRPO's (the issue's "clearly above").
3. *Independent TRPO becomes worse as training proceeds on treasure collection*: per seed, the drop
   from the best 10 %-of-budget window of its curve to the last window; met when the mean drop's
   interval lies above 0.
4. *MATRPO does not deteriorate as the number of agents grows* (N = 3 -> 6, 8 -> 12). Team returns of
   different team sizes are not on one scale (more agents, more collisions to pay for), so the
   reading is relative to the two baselines trained on the same task: the share of the gap from
   independent to centralised TRPO that MATRPO closes, ``(M - I) / (C - I)`` (per MATRPO seed, against
   the baselines' means). Met when the larger team's mean share is not below the smaller team's
   interval.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maestro.core.evaluate import mean_ci95
from maestro.reports import FINAL_TRAIN_FRACTION, RunData, final_value, find_runs, load_run, short_steps, unfinished

METRIC = "train/team_return"
PANELS = {  # task key in the recipe names -> the panel of Fig. 2
    "navigation_n3": "(a) navigation, N = 3",
    "navigation_n6": "(b) navigation, N = 6",
    "treasure_n8": "(c) treasure collection, N = 8",
    "treasure_n12": "(d) treasure collection, N = 12",
}
ALGOS = ("matrpo", "trpo_central", "trpo_independent")
GROUP_SUM = re.compile(r"^train/episode_return/(?P<group>.+)_sum$")
NAME = re.compile(r"^matrpo_(?P<task>[a-z]+_n\d+)_(?P<algo>matrpo|trpo_central|trpo_independent)$")


@dataclass
class Interval:
    """Mean and 95 % half-width over seeds, with the per-seed values."""

    values: list[float]
    digits: int = 1

    @property
    def mean(self) -> float:
        return mean_ci95(np.asarray(self.values))[0]

    @property
    def ci(self) -> float:
        return mean_ci95(np.asarray(self.values))[1]

    @property
    def low(self) -> float:
        return self.mean - self.ci

    @property
    def high(self) -> float:
        return self.mean + self.ci

    def bare(self) -> str:
        """``mean ± half-width`` (one value: the value alone; ``–`` when a seed has no value)."""
        if not np.all(np.isfinite(self.values)):
            return "–"
        if len(self.values) == 1:
            return f"{self.values[0]:.{self.digits}f}"
        return f"{self.mean:.{self.digits}f} ± {self.ci:.{self.digits}f}"

    def __str__(self) -> str:
        return f"{self.bare()} ({len(self.values)} seeds)"


def final_team_return(run: RunData) -> float:
    """``train/team_return`` averaged over the last ``FINAL_TRAIN_FRACTION`` of the run's env steps:
    ``maestro report``'s final value (``reports.final_value``), so the two agree by construction."""
    value = final_value(run, METRIC)
    assert value is not None, f"{run.name}: no {METRIC} (collect leaves such runs out)"
    return value


def late_drop(run: RunData) -> float:
    """Best window mean minus the last window's, windows of ``FINAL_TRAIN_FRACTION`` of the run's env
    steps: how far the curve has fallen from its best by the end (0 when the end is the best)."""
    x, y = run.series(METRIC)
    edges = np.linspace(0.0, x[-1], int(round(1 / FINAL_TRAIN_FRACTION)) + 1)
    index = np.clip(np.searchsorted(edges, x, side="left") - 1, 0, len(edges) - 2)
    means = [y[index == k].mean() for k in range(len(edges) - 1) if np.any(index == k)]
    return float(max(means) - means[-1])


def window_mean(run: RunData, end: float, width: float, metric: str = METRIC) -> float:
    """Mean ``metric`` of the rows with ``end - width < env_steps <= end`` (NaN when none)."""
    x, y = run.series(metric)
    inside = (x > end - width) & (x <= end)
    return float(y[inside].mean()) if inside.any() else float("nan")


def curve_tables(runs: dict[str, dict[str, list[RunData]]], marks: list[float], window: float, variants: tuple[str, ...] = ()) -> list[str]:
    """Markdown lines: per panel with finished runs, a row per algorithm, a column per mark (fractions of
    the runs' budget; the mean of the ``window`` of the budget ending there, mean ± 95 % interval over
    seeds) and the per-seed final values (``final_team_return``, seeds in order)."""
    lines: list[str] = []
    for task, panel in PANELS.items():
        by = runs.get(task, {})
        if not by:
            continue
        budget = max(float(r.config["run"]["env_steps"]) for rs in by.values() for r in rs)
        lines += ["", f"{panel}: team return, mean of the {short_steps(window * budget)} env steps ending at each mark, 95 % interval over seeds; final: last {FINAL_TRAIN_FRACTION:.0%} of the run, per seed", ""]
        lines += ["| algorithm | " + " | ".join(short_steps(f * budget) for f in marks) + " | final (per seed) |", "|---|" + "---:|" * (len(marks) + 1)]
        for algo in ALGOS + tuple(variants):
            rs = sorted(by.get(algo, []), key=lambda r: int(r.config.get("seed", 0)))
            if not rs:
                continue
            cells = [Interval([window_mean(r, f * budget, window * budget) for r in rs]).bare() for f in marks]
            finals = [final_team_return(r) for r in rs]
            seeds = ", ".join(f"s{r.config.get('seed', '?')} {v:.1f}" for r, v in zip(rs, finals))
            cells.append(f"{Interval(finals)}: {seeds}" if len(rs) >= 2 else seeds)
            lines.append(f"| `{algo}` | " + " | ".join(cells) + " |")
    return lines


def group_metrics(runs: list[RunData]) -> list[str]:
    """The per-group team-return metrics ``train/episode_return/<group>_sum`` the runs all log, sorted."""
    names = [{m for m in r.metrics() if GROUP_SUM.match(m)} for r in runs]
    return sorted(set.intersection(*names)) if names else []


def split_tables(runs: dict[str, dict[str, list[RunData]]], first: float, window: float, variants: tuple[str, ...] = ()) -> list[str]:
    """Markdown lines: per panel whose runs log two or more groups' returns (treasure collection: the
    collectors' and the deposits'), who gains and who pays. A row per algorithm; per group its summed
    episode return in the ``window`` of the budget ending at ``first`` (a fraction of the budget) and
    over the last ``FINAL_TRAIN_FRACTION`` of the run, mean ± 95 % interval over the finished seeds. The
    groups' sums add up to the team return."""
    lines: list[str] = []
    for task, panel in PANELS.items():
        by = runs.get(task, {})
        groups = group_metrics([r for rs in by.values() for r in rs])
        if len(groups) < 2:
            continue
        budget = max(float(r.config["run"]["env_steps"]) for rs in by.values() for r in rs)
        names = [GROUP_SUM.match(g)["group"] for g in groups]
        at = short_steps(first * budget)
        lines += ["", f"{panel}: each group's summed episode return (the team return is their sum), at {at} (the {short_steps(window * budget)} env steps ending there) and final (last {FINAL_TRAIN_FRACTION:.0%}), 95 % interval over seeds", ""]
        lines += ["| algorithm | " + " | ".join(f"{n} {when}" for n in names for when in (at, "final")) + " |", "|---|" + "---:|" * (2 * len(names))]
        for algo in ALGOS + tuple(variants):
            rs = by.get(algo, [])
            if not rs:
                continue
            cells = []
            for g in groups:
                cells.append(Interval([window_mean(r, first * budget, window * budget, g) for r in rs]).bare())
                cells.append(Interval([final_value(r, g) for r in rs]).bare())
            lines.append(f"| `{algo}` | " + " | ".join(cells) + " |")
    return lines


def admm_tables(runs: dict[str, dict[str, list[RunData]]], stretches: tuple[float, ...] = (0.1, 0.5, 1.0)) -> list[str]:
    """Markdown lines: per panel, the ADMM outcome of each MATRPO seed's iterations, in stretches of the
    budget ending at ``stretches`` (fractions; the default's stretches of a 500-iteration run are
    iterations 1–50, 51–250 and 251–500). Per stretch: the share of iterations whose believed surrogate
    gain after the rounds (``loss/surrogate_gain``) is negative, its median, and the median consensus
    residual (``loss/consensus_residual``). Medians, not means: late in a run a few samples' large
    log-ratios can make one iteration's believed gain an outlier by orders of magnitude."""
    gain, residual = "loss/surrogate_gain", "loss/consensus_residual"
    lines: list[str] = []
    for task, panel in PANELS.items():
        rs = sorted((r for r in runs.get(task, {}).get("matrpo", []) if r.series(gain)[0].size), key=lambda r: int(r.config.get("seed", 0)))
        if not rs:
            continue
        budget = max(float(r.config["run"]["env_steps"]) for r in rs)
        ends = [0.0, *stretches]
        heads = [f"{short_steps(a * budget)}–{short_steps(b * budget)}" for a, b in zip(ends, ends[1:])]
        lines += ["", f"{panel}: MATRPO's ADMM outcome per iteration, by stretch of env steps: share of iterations with a negative believed gain (`{gain}`), its median, median consensus residual", ""]
        lines += ["| seed | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for r in rs:
            x, g = r.series(gain)
            xr, res = r.series(residual)
            cells = []
            for a, b in zip(ends, ends[1:]):
                inside = (x > a * budget) & (x <= b * budget)
                near = (xr > a * budget) & (xr <= b * budget)
                if not inside.any():
                    cells.append("–")
                    continue
                share = float(np.mean(g[inside] < 0))
                median_residual = f"{np.median(res[near]):.2f}" if near.any() else "–"
                cells.append(f"{share:.0%}, {np.median(g[inside]):+.4f}, {median_residual}")
            lines.append(f"| s{r.config.get('seed', '?')} | " + " | ".join(cells) + " |")
    return lines


def collect(paths: list[str], variants: dict[str, list[str]] | None = None) -> tuple[dict[str, dict[str, list[RunData]]], list[str]]:
    """Finished runs by task and algorithm, and a line per run left out (unfinished or not MATRPO's).
    ``variants`` maps a label to paths whose MATRPO runs are filed under that label instead."""
    runs: dict[str, dict[str, list[RunData]]] = {}
    skipped = []
    # the variants' paths first: a run also below a main path is then already seen, as the variant's
    sources = [(where, label) for label, wheres in (variants or {}).items() for where in wheres] + [(where, None) for where in paths]
    seen: set[Path] = set()
    for where, label in sources:
        for d in find_runs([where]):
            if Path(d).resolve() in seen:
                continue
            seen.add(Path(d).resolve())
            run = load_run(d)
            m = NAME.match(run.name)
            if m is None or m["task"] not in PANELS or (label is not None and m["algo"] != "matrpo"):
                continue
            late = unfinished([run])
            if late or not run.series(METRIC)[0].size:
                skipped.append(f"{run.name}{f' ({label})' if label else ''} {late[0] if late else 'no ' + METRIC}")
                continue
            runs.setdefault(m["task"], {}).setdefault(label or m["algo"], []).append(run)
    return runs, skipped


def findings(runs: dict[str, dict[str, list[RunData]]], variants: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    """``(finding, panel, numbers, verdict)`` rows; the verdict is ``met``, ``not met`` or ``pending``.
    Findings 1, 2 and 4 are read for MATRPO and then for each variant label (``collect``) on the tasks
    where the variant has finished runs."""
    value = {t: {a: Interval([final_team_return(r) for r in rs]) for a, rs in by.items() if len(rs) >= 2} for t, by in runs.items()}
    rows = []
    kinds = [("matrpo", "MATRPO")] + [(v, f"MATRPO `{v}`") for v in variants]
    for task, panel in PANELS.items():
        v = value.get(task, {})
        c, i = v.get("trpo_central"), v.get("trpo_independent")
        need = "required" if task != "navigation_n3" else "not required at N = 3"
        for key, name in kinds:
            if key != "matrpo" and key not in runs.get(task, {}):
                continue  # a variant not trained on this task
            m = v.get(key)
            if m and c:
                ok = m.mean >= c.low
                rows.append((f"1. {name} as good as centralised TRPO", panel, f"{name} {m}; centralised {c}", ("met" if ok else "not met") + f" ({need})"))
            else:
                rows.append((f"1. {name} as good as centralised TRPO", panel, "", "pending"))
            if m and i:
                rows.append((f"2. {name} clearly above independent TRPO", panel, f"{name} {m}; independent {i}", "met" if m.low > i.high else "not met"))
            else:
                rows.append((f"2. {name} clearly above independent TRPO", panel, "", "pending"))
        if task.startswith("treasure"):
            ind = runs.get(task, {}).get("trpo_independent", [])
            if len(ind) >= 2:
                drop = Interval([late_drop(r) for r in ind])
                rows.append(("3. independent TRPO worse as training proceeds", panel, f"drop from its best window to the last {drop}", "met" if drop.low > 0 else "not met"))
            else:
                rows.append(("3. independent TRPO worse as training proceeds", panel, "", "pending"))
    for key, name in kinds:
        for small, large in (("navigation_n3", "navigation_n6"), ("treasure_n8", "treasure_n12")):
            if key != "matrpo" and not any(key in runs.get(t, {}) for t in (small, large)):
                continue
            shares = {}
            for task in (small, large):
                v = value.get(task, {})
                if all(a in v for a in ("trpo_central", "trpo_independent", key)):
                    c, i = v["trpo_central"].mean, v["trpo_independent"].mean
                    shares[task] = Interval([(x - i) / (c - i) for x in v[key].values], digits=2)
            label = f"{PANELS[small]} -> {PANELS[large]}"
            if len(shares) == 2:
                ok = shares[large].mean >= shares[small].low
                rows.append((f"4. {name} does not deteriorate with more agents", label, f"share of the independent-to-centralised gap closed: {shares[small]} -> {shares[large]}", "met" if ok else "not met"))
            else:
                rows.append((f"4. {name} does not deteriorate with more agents", label, "", "pending"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="run directories or folders holding them (archives included)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown to this file")
    p.add_argument("--marks", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.5, 1.0], help="the curve tables' marks, fractions of the budget (default: 250k ... 5M of 5M)")
    p.add_argument("--window", type=float, default=0.02, help="the curve tables' window ending at each mark, a fraction of the budget (default 0.02: 10 of 500 iterations)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=PATH", help="report the MATRPO runs below PATH as algorithm LABEL (repeatable)")
    args = p.parse_args(argv)
    if not all(0 < f <= 1 for f in args.marks) or not 0 < args.window <= 1:
        p.error(f"--marks and --window are fractions of the budget in (0, 1]; got marks {args.marks}, window {args.window}")
    variants: dict[str, list[str]] = {}
    for item in args.variant:
        label, sep, path = item.partition("=")
        if not sep or not label or not path or label in ALGOS:
            p.error(f"--variant takes LABEL=PATH with a label other than {', '.join(ALGOS)}; got {item!r}")
        variants.setdefault(label, []).append(path)
    runs, skipped = collect(args.paths, variants)
    lines = ["| finding | panel | maestro | verdict |", "|---|---|---|---|"]
    lines += [f"| {f} | {panel} | {numbers} | {verdict} |" for f, panel, numbers, verdict in findings(runs, tuple(variants))]
    if skipped:
        lines += ["", "Left out (not finished): " + "; ".join(skipped)]
    lines += curve_tables(runs, args.marks, args.window, tuple(variants))
    lines += split_tables(runs, min(args.marks), args.window, tuple(variants))
    lines += admm_tables(runs)
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
