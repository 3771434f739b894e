"""Environment throughput: maestro's batched envs beside their peers, in one process run.

One env-step is one step of one env copy: stepping ``B`` copies at once counts ``B``. Every cell
runs random actions with resets included (maestro auto-resets inside ``step``; VMAS copies are
reset when done, all at once when all finish together -- they do with a shared time limit -- and
by ``reset_at`` otherwise; MPE2 is reset when its agents list empties). For fairness the random
actions of all three are drawn *before* the timed loop: a pool of ``--action-pool`` batches per
cell, cycled through. Within a cell the libraries are timed in ``--rounds`` interleaved slices
and the best slice of each is reported, so that all of them face the same machine load.

Peers (only for the particle scenarios, which have them):

* MPE2 (https://github.com/Farama-Foundation/MPE2): one env through its PettingZoo
  ``parallel_env`` API -- the reference implementation, one copy at a time; its figure does not
  depend on ``B`` but is re-measured in every cell, beside the others.
* VMAS (Bettini et al., 2022, https://arxiv.org/abs/2207.03530): the same ``B`` on the same
  device, ``continuous_actions=False``, ``max_steps=25`` (MPE's episode length).

Any registered maestro env can be benchmarked by name (``--envs traffic_junction combat``); envs
without a peer get only the maestro column. Prints a Markdown table with maestro/VMAS and
maestro/MPE2 ratios, and the DESIGN targets for simple_spread at B=1024.

Threads: by default torch picks its thread count. On a machine shared with other processes,
multi-threaded torch ops stall whenever one of their threads is descheduled (every torch
library suffers, VMAS and maestro alike); ``--threads 1`` then gives stable figures. The header
prints the load average so that a table can be read in context.

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --threads 1
    python benchmarks/env_throughput.py --envs simple_spread --batch-sizes 1024 --seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import torch

MPE_MAX_CYCLES = 25

# scenario -> (maestro config kwargs, MPE2 module name, MPE2 kwargs, VMAS scenario, VMAS kwargs)
PEERS: dict[str, dict[str, Any]] = {
    "simple_spread": {"maestro": {}, "mpe2": ("simple_spread_v3", {"N": 3}), "vmas": ("simple_spread", {"n_agents": 3})},
    "simple_tag": {"maestro": {}, "mpe2": ("simple_tag_v3", {}), "vmas": ("simple_tag", {})},
}


Stepper = Callable[[int], None]
"""``step(k)`` advances the benchmarked env(s) by one call, using the ``k``-th pre-drawn action."""


def timed(step: Stepper, seconds: float, warmup: int) -> tuple[int, float]:
    """Call ``step(k)`` for ``k = 0, 1, ...`` until ``seconds`` have passed; returns (calls, elapsed)."""
    for k in range(warmup):
        step(k)
    n, t0 = 0, time.perf_counter()
    while True:
        step(n)
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n, el


# ------------------------------------------------------------------ maestro
def make_maestro(name: str, B: int, pool: int, kwargs: dict[str, Any]) -> Stepper:
    import maestro
    from maestro.envs.api import random_actions

    env = maestro.make_env(name, num_envs=B, seed=0, device="cpu", **kwargs)
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    actions = [random_actions(env, gen) for _ in range(pool)]

    def step(k: int) -> None:
        env.step(actions[k % pool])  # auto-resets finished copies

    return step


# ------------------------------------------------------------------ VMAS
def make_vmas(scenario: str, kwargs: dict[str, Any], B: int, pool: int) -> Stepper:
    import vmas

    env = vmas.make_env(scenario, num_envs=B, device="cpu", continuous_actions=False, max_steps=MPE_MAX_CYCLES, seed=0, **kwargs)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    ns = [int(env.action_space[i].n) for i in range(len(env.agents))]
    actions = [[torch.randint(0, n, (B,), generator=gen) for n in ns] for _ in range(pool)]

    def step(k: int) -> None:
        _, _, dones, _ = env.step(actions[k % pool])
        if bool(dones.any()):
            if bool(dones.all()):
                env.reset()
            else:
                for i in dones.nonzero().flatten().tolist():
                    env.reset_at(i)

    return step


# ------------------------------------------------------------------ MPE2
def make_mpe2(module: str, kwargs: dict[str, Any], pool: int) -> Stepper:
    import importlib

    mod = importlib.import_module(f"mpe2.{module}")
    env = mod.parallel_env(max_cycles=MPE_MAX_CYCLES, **kwargs)
    env.reset(seed=0)
    for i, a in enumerate(env.possible_agents):
        env.action_space(a).seed(i)
    actions = [{a: env.action_space(a).sample() for a in env.possible_agents} for _ in range(pool)]

    def step(k: int) -> None:
        env.step(actions[k % pool])
        if not env.agents:
            env.reset()

    return step


def measure(steppers: dict[str, tuple[Stepper, int]], seconds: float, rounds: int) -> dict[str, float]:
    """Best env-steps/s of each stepper over ``rounds`` interleaved slices of ``seconds / rounds``.

    Interleaving exposes every library to the same machine load; the best slice is the figure
    least disturbed by other processes. ``steppers[k] = (step, env_steps_per_call)``.
    """
    best = {k: 0.0 for k in steppers}
    for r in range(rounds):
        for k, (step, per_call) in steppers.items():
            n, el = timed(step, seconds / rounds, warmup=3 if r == 0 else 0)
            best[k] = max(best[k], n * per_call / el)
    return best


# ------------------------------------------------------------------ driver
def _available(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.1f}×"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["simple_spread", "simple_tag"], help="maestro env names (peers run for simple_spread/simple_tag)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 256, 1024, 4096], help="numbers of env copies B")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per library and cell (split over --rounds)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing slices per cell; the best slice is reported")
    p.add_argument("--action-pool", type=int, default=64, help="random action batches drawn before timing, cycled through")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--no-peers", action="store_true", help="skip MPE2 and VMAS")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import maestro

    registered = set(maestro.env_names())
    have_vmas = not args.no_peers and _available("vmas")
    have_mpe2 = not args.no_peers and _available("mpe2")
    print(f"# env throughput (env-steps/s; one env-step = one step of one copy; random actions pre-drawn; resets included; best of interleaved slices)")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"# command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"# load average at start (1/5/15 min): {_load()} -- other processes on the machine skew every column")
    missing = [e for e in args.envs if e not in registered]
    if missing:
        print(f"# not registered in maestro (maestro column empty): {', '.join(missing)}; registered: {', '.join(sorted(registered)) or 'none'}")
    if not args.no_peers and not have_vmas:
        print("# VMAS not installed: pip install 'maestro-marl[bench]'")
    if not args.no_peers and not have_mpe2:
        print("# MPE2 not installed: pip install 'maestro-marl[bench]'")

    rows: list[dict[str, Any]] = []
    for name in args.envs:
        peer = PEERS.get(name)
        for B in args.batch_sizes:
            steppers: dict[str, tuple[Stepper, int]] = {}
            if name in registered:
                steppers["maestro"] = (make_maestro(name, B, args.action_pool, dict(peer["maestro"]) if peer else {}), B)
            if peer is not None and have_vmas:
                scen, kw = peer["vmas"]
                steppers["vmas"] = (make_vmas(scen, kw, B, args.action_pool), B)
            if peer is not None and have_mpe2:
                mod, kw = peer["mpe2"]
                steppers["mpe2"] = (make_mpe2(mod, kw, args.action_pool), 1)
            best = measure(steppers, args.seconds, args.rounds)
            m, v, mpe = best.get("maestro"), best.get("vmas"), best.get("mpe2")
            rows.append({"env": name, "B": B, "maestro": m, "vmas": v, "mpe2": mpe})
            print(f"#   {name} B={B}: maestro {_fmt(m)}  VMAS {_fmt(v)}  MPE2 {_fmt(mpe)}", flush=True)

    print()
    print("| env | B | maestro | VMAS | MPE2 (1 env) | maestro / VMAS | maestro / MPE2 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['env']} | {r['B']} | {_fmt(r['maestro'])} | {_fmt(r['vmas'])} | {_fmt(r['mpe2'])} | {_ratio(r['maestro'], r['vmas'])} | {_ratio(r['maestro'], r['mpe2'])} |")
    print(f"\n# load average at end: {_load()}")
    target = next((r for r in rows if r["env"] == "simple_spread" and r["B"] == 1024), None)
    if target is not None and target["maestro"] is not None:
        print()
        for peer_key, need in (("vmas", 2.0), ("mpe2", 200.0)):
            if target[peer_key] is not None:
                ratio = target["maestro"] / target[peer_key]
                ok = "met" if ratio >= need else "NOT met"
                print(f"target simple_spread B=1024 >= {need:g}x {peer_key.upper()}: {ratio:.2f}x ({ok})")
    if args.json:
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "seconds": args.seconds, "rounds": args.rounds, "argv": sys.argv, "loadavg_end": _load()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
