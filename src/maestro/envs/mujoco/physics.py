"""B copies of one MuJoCo model stepped together: the batched stepper under maestro's MuJoCo bodies.

Gymnasium's MuJoCo v5 envs (``gymnasium/envs/mujoco/mujoco_env.py``) step one ``MjData``: set
``ctrl``, ``mj_step`` ``frame_skip`` times, then ``mj_rnePostConstraint`` (so that ``cfrc_ext`` and
the other force quantities an observation reads are filled). ``BatchedPhysics`` does the same for
``B`` ``MjData`` objects, one per env copy, in one of two ways (``threads``):

* ``threads=1``, a loop over the copies in this thread. Every copy is exactly Gymnasium's env: same
  model file, same calls, the solver's warm start carried from step to step, so trajectories are
  bit-identical to Gymnasium's (``tests/test_mujoco.py``).
* ``threads>1``, MuJoCo's own batched stepper ``mujoco.rollout`` (a pool of C++ threads):
  the ``B`` states advance ``frame_skip`` substeps on ``threads`` threads. ``mujoco.rollout`` takes
  the solver's warm start in but does not hand it back, so a trajectory differs from Gymnasium's by
  solver round-off (about 1e-12 after 50 steps of Walker2d); and since it returns states only, a
  body whose observation reads force quantities (``post_constraint``, the Humanoid) steps its last
  substep in the loop, which recomputes them exactly as Gymnasium reads them (they describe the
  state at the start of the last substep).

Two Python threads each looping over half of the copies were no faster than one here (measured,
not kept). Which way is faster depends on the body, ``B`` and the load of the machine:
``benchmarks/mujoco_throughput.py`` measures them against Gymnasium's single env and vector envs.

A copy's state is its full physics state (``mjSTATE_FULLPHYSICS``: time, ``qpos``, ``qvel``,
``act``...) plus the solver's warm start (``qacc_warmstart``), so ``set_state(get_state())``
continues exactly.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
"""What ``get_state`` saves of each copy besides the warm start."""


def gymnasium_asset(name: str) -> Path:
    """The model file ``name`` shipped with Gymnasium's MuJoCo envs (``gymnasium/envs/mujoco/assets``),
    found without importing ``gymnasium.envs.mujoco`` (whose renderer needs ``imageio``)."""
    import gymnasium

    path = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(f"Gymnasium's MuJoCo model {name!r} is not at {path}: is gymnasium>=1.0 installed?")
    return path


class BatchedPhysics:
    """``num_envs`` copies of ``model``, each an ``MjData``, advanced ``frame_skip`` substeps per step.

    Args:
        model: the ``MjModel`` every copy shares.
        frame_skip: physics substeps per env step (Walker2d 4, Humanoid 5).
        num_envs: copies ``B``.
        threads: 1 steps the copies in a loop in this thread; more uses ``mujoco.rollout`` on that
            many threads (module docstring).
        post_constraint: call ``mj_rnePostConstraint`` after each step (bodies whose observation or
            reward reads ``cfrc_ext``).
    """

    def __init__(self, model: mujoco.MjModel, frame_skip: int, num_envs: int, threads: int = 1, post_constraint: bool = False) -> None:
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.model = model
        self.frame_skip = frame_skip
        self.num_envs = num_envs
        self.threads = threads
        self.post_constraint = post_constraint
        self.data = [mujoco.MjData(model) for _ in range(num_envs)]
        self.nstate = mujoco.mj_stateSize(model, STATE_SPEC)
        self._rollout = None
        if threads > 1:
            from mujoco import rollout

            self._rollout = rollout.Rollout(nthread=threads)
            self._scratch = [mujoco.MjData(model) for _ in range(threads)]
            self._states = np.zeros((num_envs, self.nstate))
            self._warm = np.zeros((num_envs, model.nv))

    def __getstate__(self) -> dict:
        """Copies and pickles leave out ``mujoco.rollout``'s thread pool (it cannot be pickled) ..."""
        state = dict(self.__dict__)
        state["_rollout"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        """... and start a new one."""
        self.__dict__.update(state)
        if self.threads > 1:
            from mujoco import rollout

            self._rollout = rollout.Rollout(nthread=self.threads)

    # ------------------------------------------------------------------ stepping
    def step(self, ctrl: np.ndarray) -> None:
        """Advance every copy one env step with controls ``ctrl`` ``(B, nu)`` float64."""
        if ctrl.shape != (self.num_envs, self.model.nu):
            raise ValueError(f"controls have shape {ctrl.shape}, expected {(self.num_envs, self.model.nu)} (B, nu)")
        if self._rollout is None:
            m, n = self.model, self.frame_skip
            for d, c in zip(self.data, ctrl):
                d.ctrl[:] = c
                mujoco.mj_step(m, d, nstep=n)
                if self.post_constraint:
                    mujoco.mj_rnePostConstraint(m, d)
            return
        self._step_rollout(ctrl)

    def _step_rollout(self, ctrl: np.ndarray) -> None:
        m = self.model
        threaded = self.frame_skip - 1 if self.post_constraint else self.frame_skip
        if threaded > 0:
            for i, d in enumerate(self.data):
                mujoco.mj_getState(m, d, self._states[i], STATE_SPEC)
                self._warm[i] = d.qacc_warmstart
            states, _ = self._rollout.rollout(m, self._scratch, self._states, ctrl[:, None, :], nstep=threaded, initial_warmstart=self._warm)
            for d, s in zip(self.data, states[:, -1]):
                mujoco.mj_setState(m, d, s, STATE_SPEC)
        for d, c in zip(self.data, ctrl):
            d.ctrl[:] = c
            if threaded < self.frame_skip:
                mujoco.mj_step(m, d)
            if self.post_constraint:
                mujoco.mj_rnePostConstraint(m, d)

    # ------------------------------------------------------------------ resets and reading
    def reset(self, index: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Restart copies ``index`` ``(n,)`` at ``qpos`` ``(n, nq)`` and ``qvel`` ``(n, nv)``, as
        Gymnasium's ``reset``: ``mj_resetData``, set the state, ``mj_forward``."""
        m = self.model
        for k, i in enumerate(index):
            d = self.data[int(i)]
            mujoco.mj_resetData(m, d)
            d.qpos[:] = qpos[k]
            d.qvel[:] = qvel[k]
            mujoco.mj_forward(m, d)

    def gather(self, field: str) -> np.ndarray:
        """``(B, *shape)`` stack of the ``MjData`` field ``field`` (``qpos``, ``cinert``...) of every copy."""
        return np.stack([getattr(d, field) for d in self.data])

    # ------------------------------------------------------------------ snapshots
    def get_state(self) -> dict[str, np.ndarray]:
        """``physics`` ``(B, nstate)`` (``mjSTATE_FULLPHYSICS``) and ``warmstart`` ``(B, nv)``, float64 copies."""
        physics = np.zeros((self.num_envs, self.nstate))
        for i, d in enumerate(self.data):
            mujoco.mj_getState(self.model, d, physics[i], STATE_SPEC)
        return {"physics": physics, "warmstart": self.gather("qacc_warmstart").copy()}

    def set_state(self, physics: np.ndarray, warmstart: np.ndarray) -> None:
        """Inverse of ``get_state`` (shapes ``(B, nstate)`` and ``(B, nv)``)."""
        if physics.shape != (self.num_envs, self.nstate) or warmstart.shape != (self.num_envs, self.model.nv):
            raise ValueError(
                f"physics state has shapes {physics.shape} and {warmstart.shape}, expected {(self.num_envs, self.nstate)} and {(self.num_envs, self.model.nv)}"
            )
        for d, s, w in zip(self.data, physics, warmstart):
            mujoco.mj_setState(self.model, d, np.ascontiguousarray(s, dtype=np.float64), STATE_SPEC)
            d.qacc_warmstart[:] = w
