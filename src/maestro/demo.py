"""``python -m maestro.demo`` (what ``make demo`` runs) = ``maestro demo``: train MAPPO on
simple_spread briefly, then evaluate, render and report it, printing where everything went.

The budget (300k env steps, under a minute on 2 CPU cores) shows learning, not the final
performance: ``maestro train mappo/simple_spread`` runs the full recipe.
"""

from __future__ import annotations

import sys

from maestro.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
