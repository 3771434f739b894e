"""``python -m maestro.demo`` (what ``make demo`` runs) = ``maestro demo``: train MS-MARL (Kong et
al. 2017) on 5 vs 5 combat briefly, then evaluate, render and report it and plot its master's and
slaves' action components (Fig. 6b), printing where everything went.

The budget (1.5M env steps, a few minutes on one CPU core) shows learning (the enemy's hit points
left fall from ~11 to ~6 of 15; the win rate leaves 0), not the paper's figure:
``maestro train ms_marl/combat_ms_marl`` runs the full recipe. ``maestro demo mappo/simple_spread``
is the MAPPO demo.
"""

from __future__ import annotations

import sys

from maestro.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
