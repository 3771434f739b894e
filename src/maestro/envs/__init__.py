"""Built-in environments; importing this package registers them."""

import importlib

# Each subpackage registers its scenarios on import. Listed here so that one place says what is built in.
for _mod in ("maestro.envs.particle", "maestro.envs.grid", "maestro.envs.units", "maestro.envs.mujoco", "maestro.envs.nas"):
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as _err:  # a family not written yet
        if _err.name != _mod:
            raise
