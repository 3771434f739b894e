"""SMAX (JaxMARL) throughput worker for ``unit_combat_throughput.py``. It runs in a separate Python
that has ``jax`` and ``jaxmarl`` (never a maestro dependency; e.g. ``python -m venv /tmp/smax-venv &&
/tmp/smax-venv/bin/pip install jax jaxlib jaxmarl``).

Protocol: one request per line on stdin, ``B STEPS``; one JSON line per request on stdout,
``{"B": B, "steps": STEPS, "seconds": ..., "compile_s": ...}`` (``compile_s`` only on the first
request for a ``B``: jit compilation and the first reset, excluded from ``seconds``). So the caller
can interleave slices of SMAX with slices of maestro and both face the same machine load.

The scenario is N vs M marines with SMAX's own marine statistics (15 vs 16 by default), the enemy
is SMAX's heuristic bot (``HeuristicEnemySMAX``, shooting the closest), actions are uniform random
discrete actions drawn outside the timed loop (8 sets cycled, with 8 sets of step keys), and copies
that finish are reset inside SMAX's ``step`` (auto-reset), as in maestro. A step of B copies is
``jit(vmap(env.step))`` called from Python, as a learner would between policy evaluations. XLA is
asked for one CPU thread (``--xla_cpu_multi_thread_eigen=false``; the maestro side runs torch on one
thread); any extra threads XLA still uses would favour SMAX.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jaxmarl.environments.smax import HeuristicEnemySMAX, Scenario  # noqa: E402


class Cell:
    """Compiled step, state and action pool for one batch size."""

    def __init__(self, env: HeuristicEnemySMAX, B: int) -> None:
        t0 = time.perf_counter()
        n_actions = env.action_space(env.agents[0]).n
        self.step = jax.jit(jax.vmap(env.step))
        _, self.state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), B))
        self.acts = [
            {a: jax.random.randint(jax.random.PRNGKey(100 * k + i), (B,), 0, n_actions) for i, a in enumerate(env.agents)}
            for k in range(8)
        ]
        self.keys = [jax.random.split(jax.random.PRNGKey(1000 + k), B) for k in range(8)]
        self.k = 0
        self.run(3)
        self.compile_s = time.perf_counter() - t0

    def run(self, steps: int) -> float:
        t = time.perf_counter()
        state = self.state
        for _ in range(steps):
            _, state, _, _, _ = self.step(self.keys[self.k % 8], state, self.acts[self.k % 8])
            self.k += 1
        jax.block_until_ready(state)
        self.state = state
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-agents", type=int, default=15)
    p.add_argument("--n-enemies", type=int, default=16)
    args = p.parse_args()
    n, m = args.n_agents, args.n_enemies
    env = HeuristicEnemySMAX(scenario=Scenario(jnp.zeros((n + m,), dtype=jnp.uint8), n, m, False, False))
    cells: dict[int, Cell] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        B, steps = (int(x) for x in line.split())
        out = {"B": B, "steps": steps}
        if B not in cells:
            cells[B] = Cell(env, B)
            out["compile_s"] = cells[B].compile_s
        out["seconds"] = cells[B].run(steps)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
