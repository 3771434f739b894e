"""Particle worlds (MPE semantics, batched in torch); importing this package registers the scenarios."""

import importlib

for _mod in ("simple_spread", "simple_tag", "collect_treasure"):
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _err:  # a scenario not written yet
        if _err.name != f"{__name__}.{_mod}":
            raise
