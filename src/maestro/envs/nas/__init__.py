"""Architecture search as a sequential task with master and slave roles (Guo & Duan, papers/000,
Sec. 5; IRLAS); importing this package registers ``nas``."""

from maestro.envs.nas import architecture  # noqa: F401
