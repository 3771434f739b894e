"""Throughput of maestro's ``unit_combat`` beside JaxMARL's SMAX, in one run, 15 vs 16 marines.

One env-step is one step of one env copy (stepping ``B`` copies counts ``B``). maestro runs
``unit_combat`` (scenario ``m15v16``, 8 game frames per step, BW statistics) with uniform random
BiCNet actions; SMAX runs a custom ``Scenario`` of 15 vs 16 marines against its heuristic enemy
with random discrete actions (``benchmarks/smax_worker.py``, in a separate Python that has JAX:
``--smax-python``, default ``$SMAX_PYTHON`` or ``/tmp/smax-venv/bin/python``). Both include
auto-resets, draw their actions before the timed loop, and run on one thread (torch
``set_num_threads(1)``; XLA single-threaded). For each ``B`` the two are timed in ``--rounds``
interleaved slices of about ``--seconds`` each and the best slice of each is reported, so that both
face the same machine load; SMAX's jit compilation is excluded and reported apart.

The engines do not simulate the same amount: SMAX steps 8 world steps of 1/16 s each per env step
(its own marine statistics), maestro 8 BW frames (1/3 s) resolved analytically per env step, with
BiCNet's continuous action; the figure compares what a learner waits for per env step.

    python benchmarks/unit_combat_throughput.py
    python benchmarks/unit_combat_throughput.py --batch-sizes 1024 --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import maestro
from maestro.envs.api import random_actions

HERE = Path(__file__).resolve().parent


def maestro_stepper(B: int, scenario: str, seed: int = 0):
    env = maestro.make_env("unit_combat", num_envs=B, seed=seed, scenario=scenario)
    env.reset()
    g = torch.Generator().manual_seed(seed)
    pool = [random_actions(env, g) for _ in range(8)]
    state = {"k": 0}

    def run(steps: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            env.step(pool[state["k"] % 8])
            state["k"] += 1
        return time.perf_counter() - t

    run(3)
    return run


class Smax:
    """The SMAX worker process (``smax_worker.py``) behind a request/response pipe."""

    def __init__(self, python: str) -> None:
        self.proc = subprocess.Popen(
            [python, str(HERE / "smax_worker.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    def run(self, B: int, steps: int) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{B} {steps}\n")
        self.proc.stdin.flush()
        while True:  # jaxmarl prints a banner on import: skip lines that are not our JSON
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the SMAX worker exited (is jaxmarl installed in --smax-python?)")
            if line.startswith("{"):
                return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def steps_for(rate: float, seconds: float) -> int:
    return max(2, int(rate * seconds))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256, 1024])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="length of one timed slice")
    p.add_argument("--scenario", default="m15v16")
    p.add_argument("--smax-python", default=os.environ.get("SMAX_PYTHON", "/tmp/smax-venv/bin/python"))
    p.add_argument("--no-smax", action="store_true")
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    use_smax = not args.no_smax and Path(args.smax_python).exists()
    smax = Smax(args.smax_python) if use_smax else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# unit_combat ({args.scenario}) vs SMAX 15v16 marines; torch {torch.__version__}, 1 thread; load average {load}")
    if not use_smax:
        print(f"# SMAX skipped ({'--no-smax' if args.no_smax else 'no python at ' + args.smax_python})")
    rows = []
    try:
        for B in args.batch_sizes:
            run_m = maestro_stepper(B, args.scenario)
            m_rate = B / max(run_m(2) / 2, 1e-9)
            best_m = 0.0
            best_s = 0.0
            compile_s = None
            s_rate = None
            if smax is not None:
                first = smax.run(B, 2)
                compile_s = first.get("compile_s")
                s_rate = B * 2 / max(first["seconds"], 1e-9)
            for _ in range(args.rounds):
                n = steps_for(m_rate / B, args.seconds)
                best_m = max(best_m, n * B / run_m(n))
                if smax is not None and s_rate is not None:
                    ns = steps_for(s_rate / B, args.seconds)
                    r = smax.run(B, ns)
                    best_s = max(best_s, ns * B / r["seconds"])
            row = {"B": B, "maestro": best_m, "smax": best_s if smax is not None else None, "smax_compile_s": compile_s}
            row["ratio"] = best_m / best_s if best_s else None
            rows.append(row)
    finally:
        if smax is not None:
            smax.close()
    print("| B | maestro unit_combat (env-steps/s) | SMAX (env-steps/s) | maestro / SMAX | SMAX compile (s) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        smax_s = f"{r['smax']:,.0f}" if r["smax"] else "-"
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "-"
        comp = f"{r['smax_compile_s']:.0f}" if r["smax_compile_s"] else "-"
        print(f"| {r['B']} | {r['maestro']:,.0f} | {smax_s} | {ratio} | {comp} |")
    at = [r for r in rows if r["B"] == 1024 and r["ratio"]]
    if at:
        print(f"target maestro >= 10x SMAX at B=1024: {'met' if at[0]['ratio'] >= 10 else 'NOT met'} ({at[0]['ratio']:.1f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
