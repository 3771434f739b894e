"""Figure 6b of MS-MARL (Kong et al. 2017, arXiv 1712.07305): the master's and the slaves' action
components of a trained MS-MARL policy over one episode, drawn from a policy or a run directory.

The recording itself (``record_action_components``) is algorithm code and lives beside the
policy in ``maestro.algos.reinforce``; this module loads runs and draws, so it sits in the
reports layer (``recipes`` and ``algos`` below it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maestro.algos.reinforce import Policy, record_action_components
from maestro.envs.api import BatchedEnv
from maestro.recipes import env_factory, load_run_policy


def action_names(env: BatchedEnv, n: int) -> list[str]:
    """Readable names of the ``n`` discrete actions of the known grid worlds (indices otherwise)."""
    name = env.spec.name
    if name == "traffic_junction" and n == 2:
        return ["gas", "brake"]
    if name == "combat":
        base = ["stay", "up", "down", "left", "right"]
        return base + [f"attack {j}" for j in range(n - len(base))]
    return [str(i) for i in range(n)]


def plot_action_components(
    source: str | Path | Policy, env: BatchedEnv | None = None, out: str | Path = "action_components.png", seed: int = 0, copy: int = 0
) -> Path:
    """Figure 6b of Kong et al. 2017: the master's and the slaves' action components over an episode.

    Args:
        source: a trained MS-MARL ``Policy`` or a run directory (its newest valid checkpoint).
        env: the env to play (default, for a run directory: one copy of the run's recipe env).
        out: the PNG to write.
        seed: episode seed.
        copy: which env copy's episode to draw.

    Writes one PNG: heat maps over (time, action) of the master's component, the slaves'
    component (both in logit units, averaged over the agents alive at each step) and the
    resulting action probabilities, plus each alive agent's chosen action. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(source, Policy):
        policy = source
        if env is None:
            raise ValueError("plot_action_components: give the env to play when passing a Policy")
    else:
        recipe, policy, _ = load_run_policy(source)
        if env is None:
            env = env_factory(recipe)(1, seed)
    assert env is not None
    rec = record_action_components(policy, env, seed=seed)
    alive = rec["alive"][:, copy]  # (T, N)
    T_ep = int(alive.any(-1).nonzero()[0].max()) + 1 if alive.any() else rec["alive"].shape[0]
    alive = alive[:T_ep]
    w = alive[..., None].astype(np.float64)
    denom = np.maximum(w.sum(1), 1.0)  # (T, 1)

    def agent_mean(x: np.ndarray) -> np.ndarray:
        return ((x[:T_ep, copy] * w).sum(1) / denom).T  # (A, T)

    comps = [("master component (logits)", agent_mean(rec["master"])), ("slave component (logits)", agent_mean(rec["slave"])), ("action probabilities", agent_mean(rec["probs"]))]
    A = rec["master"].shape[-1]
    names = action_names(env, A)
    fig = Figure(figsize=(max(6.0, 0.25 * T_ep + 3), 2.2 * 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    for ax, (title, m) in zip(axes[:3], comps):
        if "logits" in title:  # a diverging map centred on 0: red favours an action, blue disfavours it
            lim = float(np.abs(m).max()) or 1.0
            im = ax.imshow(m, aspect="auto", origin="lower", cmap="coolwarm", vmin=-lim, vmax=lim, interpolation="nearest")
        else:
            im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_yticks(range(A), names)
        ax.set_title(f"{title}, mean over alive agents")
        fig.colorbar(im, ax=ax)
    acts = np.where(alive, rec["actions"][:T_ep, copy], -1).astype(np.float64).T  # (N, T)
    acts[acts < 0] = np.nan
    im = axes[3].imshow(acts, aspect="auto", origin="lower", cmap="tab10", vmin=0, vmax=max(A - 1, 1), interpolation="nearest")
    axes[3].set_ylabel("agent")
    axes[3].set_title("chosen action per alive agent")
    axes[3].set_xlabel("time step")
    fig.colorbar(im, ax=axes[3])
    fig.suptitle(f"MS-MARL action components ({policy.model_name}, {env.spec.name}, seed {seed}, copy {copy})")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
