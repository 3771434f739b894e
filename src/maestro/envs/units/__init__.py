"""Continuous StarCraft-style unit combat (MS-MARL §4.2): importing this package registers ``unit_combat``."""

from maestro.envs.units import engine  # noqa: F401  (registration)
