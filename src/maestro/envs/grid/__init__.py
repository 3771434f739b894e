"""Grid worlds of CommNet (Sukhbaatar et al. 2016) used by MS-MARL (Kong et al. 2017): the traffic
junction and the combat game. Importing this package registers ``traffic_junction`` and ``combat``."""

from maestro.envs.grid import combat, traffic_junction  # noqa: F401  (registration)
