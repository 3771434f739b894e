"""MuJoCo bodies with master and slave roles (Guo & Duan, papers/000), over Gymnasium's MuJoCo v5
models; importing this package registers ``walker2d`` and ``humanoid``."""

from maestro.envs.mujoco import humanoid, walker2d  # noqa: F401
