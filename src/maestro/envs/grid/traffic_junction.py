"""Traffic junction (Sukhbaatar et al. 2016, CommNet, arXiv 1605.07736; Singh et al. 2019, IC3Net,
arXiv 1812.09755), the first discrete task of MS-MARL (Kong et al. 2017, §4.1 and Table 1).

Cars enter a grid of two-way roads, drive along a fixed route and leave at its end; each car
only chooses *gas* (advance one cell along its route, action 0) or *brake* (stay, action 1).
The semantics follow IC3Net's ``traffic_junction_env.py`` / ``traffic_helper.py`` and CommNet's
``Traffic.lua`` / ``Crossing*.lua``; the geometry is IC3Net's (cars keep to the right):

=========  ======  =====================================  ======  =====  ======  ===============
difficulty  dim    roads                                   routes  cars   steps   add rate
=========  ======  =====================================  ======  =====  ======  ===============
easy        7×7    one one-way road each way, 1 crossing    2       5      20      0.1 → 0.3
medium      14×14  two-lane roads, one junction             4×3     10     40      0.05 → 0.2
hard        18×18  2+2 two-lane roads, four junctions       8×7     20     40      0.02 → 0.05
=========  ======  =====================================  ======  =====  ======  ===============

(vision 0 on easy, 1 otherwise; every value can be overridden through ``TrafficJunctionConfig``.)

Routes. A route is traced from an entry cell by a choice at each of the first two junctions it
reaches: straight, right (turn in the first junction cell) or left (cross one more cell, then
turn); it goes straight through any later junction (IC3Net's rule: at most two turns).
``route_set="all"`` enumerates every choice sequence, which gives the reference route sets:
2 on easy (straight only, as in IC3Net), 3 per entry on medium and 7 per entry on hard (one
immediate exit + 3 after going straight + 3 after the inner turn: CommNet's ``CrossingHard.lua``
and IC3Net's ``get_routes`` both have these 56). MS-MARL's text says "only three possible routes
for each car" on hard; ``route_set="first_turn"`` gives that reading (a choice at the first
junction, straight afterwards: 8 × 3 routes; the ``ms_marl/traffic_junction_3routes_*`` recipes).
Neither reference's hard junction has this route set: it is our reading of the paper's sentence.

One step, for ``B`` copies at once (tensors ``(B, N)`` over the ``N = n_cars`` car slots):

1. every car on the grid ages (``τ += 1``); cars on *gas* advance; a car that advances past the
   last cell of its route leaves (its slot becomes free, ``alive`` False unless step 2 refills it);
2. entries, in IC3Net's order (``Layout.service_order``): at each entry point a car enters with
   probability ``add_rate`` while fewer than ``N`` cars are on the grid (IC3Net's ``_add_cars``,
   run after the moves: a slot freed in step 1 counts as free, ``slot_reuse="same_step"``, the
   default; ``"next_step"`` keeps it closed until the next step); it takes a uniformly random
   free slot — one that was free before the step while any is left, else one freed in step 1 —
   and a uniformly random route of that entry, starts on the route's first cell with ``τ = 0``;
3. a collision is two or more cars in one cell (new cars included); each car in such a cell gets
   ``-collision_penalty`` (10) on top of ``-time_penalty·τ`` (0.01·τ). Cars that left get 0.

The episode never terminates early (it is truncated at ``max_steps``), as in IC3Net; the grid is
empty at reset and the first cars arrive in the first step. ``info``:
``success`` (1 if the episode so far had no collision; read it where ``done``), ``collisions``
(cells holding ≥ 2 cars, summed over the episode's steps), ``exited`` (cars that completed their
route) and ``add_rate``, each ``(B,)`` float32; and, per slot, ``completed`` (``(B, N)`` bool:
the slot's car left the grid in this step, IC3Net's ``is_completed``; not in ``spec.info_keys``).

Observation of car ``i`` (``(B, N, obs_dim)`` float32, zeros for free slots), in this order:
``id`` one-hot (``N``), ``route`` one-hot (``R`` routes), ``location`` one-hot over the road
cells (``n_road`` = 13 / 52 / 128, numbered row-major; ``env.n_road``), then the ``(2v+1)²``
vision window centred on the car, row-major, as two blocks: ``road`` (1 where the cell is a road
cell; 0 off road and outside the grid) and ``cars`` (number of *other* cars in the cell). IC3Net
(``vocab_type="bool"``) gives every window cell a one-hot road-cell id and counts the car itself;
this layout carries the same information in ``N + R + n_road + 2(2v+1)²`` numbers
(22 / 92 / 222 by default). ``observation="commnet"`` appends what CommNet's MazeBase games show
besides (``Traffic.lua`` gives each car the attributes ``name`` and ``route``, and MazeBase makes
every attribute of an item in the window visible, as a bag of words): ``routes`` (``R``, the number
of other cars in the window on each route) and ``slots`` (``N``, 1 for each other car in the
window), ``+ R + N`` numbers (298 on hard). Counts alone do not say where a neighbour is going, so
two cars that see each other next to a junction cell cannot tell whether they are about to meet
there; with the routes they can. MS-MARL ran CommNet's code ("the same state ... as in Sukhbaatar
et al. (2016)"), so ``commnet`` is its task's view; ``ic3net`` (the default) is IC3Net's. The
shipped recipes keep ``ic3net``, on which their README figures were measured; MS-MARL with
``commnet`` ends at the same success (README).

Global state (``(B, dim·dim)`` float32): the occupancy map, ``state[:, r·dim + c]`` = number of
cars in cell ``(r, c)``; the master agent's input in MS-MARL.

Curriculum: the add rate rises linearly from ``add_rate_min`` to ``add_rate_max`` between the
training fractions ``curriculum_start`` and ``curriculum_end`` (IC3Net: epochs 250 → 1250 of 2000).
``add_rate(progress, cfg)`` is the pure schedule; the trainer calls ``env.set_progress(fraction)``.
IC3Net rounds the rate down to multiples of 0.01; this schedule is not rounded. The env starts
at ``initial_progress`` (default 1.0, the final rate, as for evaluation): a trainer that follows
the curriculum calls ``set_progress`` from 0 on. The rate is per copy state (``add_rate``, in
``get_state``), so snapshots replay exactly.

Baselines: ``always_gas(env)`` and ``brake_if_occupied(env)`` (brake when the next cell of the
route holds a car; it cannot see crossing traffic and its queues invite collisions at the entries,
so it is not better than always-gas), and the centralised ``reservation(env)`` (sees every car; no
collisions on the hard junction: the upper bound); ``benchmarks/grid_stats.py`` reports their collision rates.

Deliberate departures: per-step randomness comes from per-copy hash streams (``common.py``) so
that a copy replays identically alone; the entry process draws its Bernoulli per entry exactly as
IC3Net, but the random free slot uses one random permutation per step; the collision penalty is
IC3Net's −10 per car (CommNet's code charges 0.5 × 10 per car); a car leaves when it drives past
its last cell (IC3Net; CommNet removes it on reaching that cell); a new car takes a slot that was
free before the step while one is left, and a slot freed in the same step only when none is
(IC3Net's ``_choose_dead`` draws among all free slots; the cars are the same, only which slot
holds which car differs, so every statistic of the junction is IC3Net's, and a slot's ``alive``
flag drops for a step whenever the number of cars allows it). When a slot does change cars within
a step, ``alive`` stays True: ``info["completed"]`` (``(B, N)`` bool, IC3Net's ``is_completed``)
marks the slots whose car left in the step: REINFORCE cuts the returns there, as IC3Net's trainer
does with ``is_completed``, and the slot's recurrent state carries on to the new car, as in
IC3Net. ``slot_reuse="next_step"`` keeps an older rule of this module: a slot freed in a step
takes no car before the next one (entries wait while all ``n_cars`` slots are taken or just
freed); fewer cars drive than in IC3Net, so easy and medium are slightly easier (team returns
2–9% less negative under scripted policies; ``docs/traffic_junction.md``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import gymnasium.spaces as gspaces
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maestro.envs.api import BatchedEnv, group_spec
from maestro.envs.grid.common import new_keys, palette, ramp, stream_uniform
from maestro.envs.render import canvas, draw_disc, draw_line, fill_rect
from maestro.registry import register_env
from maestro.spec import EnvSpec

Difficulty = Literal["easy", "medium", "hard"]
RouteSet = Literal["all", "first_turn"]
Observation = Literal["ic3net", "commnet"]
SlotReuse = Literal["same_step", "next_step"]

GAS, BRAKE = 0, 1

# Defaults per difficulty (IC3Net README and traffic_junction_env.py; CommNet configs).
_DEFAULTS: dict[str, dict[str, float | int]] = {
    "easy": dict(dim=7, n_cars=5, max_steps=20, vision=0, add_rate_min=0.1, add_rate_max=0.3),
    "medium": dict(dim=14, n_cars=10, max_steps=40, vision=1, add_rate_min=0.05, add_rate_max=0.2),
    "hard": dict(dim=18, n_cars=20, max_steps=40, vision=1, add_rate_min=0.02, add_rate_max=0.05),
}
_MIN_DIM = {"easy": 3, "medium": 4, "hard": 9}
_WHY_MIN_DIM = {
    "easy": "one crossing with a cell on each side",
    "medium": "one junction of two-lane roads with a cell on each side",
    "hard": "four junctions of two-lane roads with road cells before, between and after them",
}


@dataclass(frozen=True)
class TrafficJunctionConfig:
    """Traffic junction settings; ``None`` takes the value of the chosen ``difficulty``."""

    difficulty: Difficulty = "hard"
    """easy (7×7, 1 crossing) | medium (14×14, 1 junction) | hard (18×18, 4 junctions, MS-MARL's task)"""
    dim: int | None = None
    """grid side length; default 7 / 14 / 18"""
    n_cars: int | None = None
    """maximum number of cars on the grid = number of agent slots N; default 5 / 10 / 20"""
    max_steps: int | None = None
    """episode length; default 20 / 40 / 40 (CommNet uses 40 on hard, IC3Net 80)"""
    vision: int | None = None
    """vision radius v of the (2v+1)² observation window; default 0 / 1 / 1"""
    add_rate_min: float | None = None
    """entry probability per entry point and step at the start of the curriculum; default 0.1 / 0.05 / 0.02"""
    add_rate_max: float | None = None
    """entry probability at the end of the curriculum; default 0.3 / 0.2 / 0.05"""
    curriculum_start: float = 0.125
    """training fraction where the add rate starts rising (IC3Net: epoch 250 of 2000)"""
    curriculum_end: float = 0.625
    """training fraction where the add rate reaches add_rate_max (IC3Net: epoch 1250 of 2000)"""
    initial_progress: float = 1.0
    """training fraction the env starts at (1.0: the final add rate, as for evaluation)"""
    route_set: RouteSet = "all"
    """all: every route of the references (2 / 12 / 56); first_turn: turn at the first junction only"""
    observation: Observation = "ic3net"
    """ic3net: what a car sees of the others is their number per window cell (IC3Net's bool vocab);
    commnet: also the routes and slots of the other cars in its window (CommNet's MazeBase, where
    every attribute of a visible item is observed: MS-MARL's task)"""
    slot_reuse: SlotReuse = "same_step"
    """same_step: a slot freed by a car leaving in a step can take a new car in that step (IC3Net:
    ``_add_cars`` runs after ``_take_action``, ``_choose_dead`` draws from ``alive_mask == 0``);
    next_step: it takes one from the next step on, so that its ``alive`` flag always drops for a
    step between two cars and a learner that resets hidden states and cuts returns where ``alive``
    drops needs no other signal; the grid then holds fewer cars than IC3Net's when the car limit
    binds (easy, medium), a slightly easier task than the papers'"""
    time_penalty: float = 0.01
    """reward -time_penalty·τ per car per step, τ = steps since the car entered"""
    collision_penalty: float = 10.0
    """reward -collision_penalty for each car sharing its cell with another car"""

    def __post_init__(self) -> None:
        resolve(self)


@dataclass(frozen=True)
class TrafficParams:
    """Concrete parameters of a ``TrafficJunctionConfig`` (the ``None`` fields filled in)."""

    difficulty: str
    dim: int
    n_cars: int
    max_steps: int
    vision: int
    add_rate_min: float
    add_rate_max: float
    curriculum_start: float
    curriculum_end: float
    route_set: str
    observation: str
    slot_reuse: str


def resolve(cfg: TrafficJunctionConfig) -> TrafficParams:
    """Fill in the difficulty's defaults and validate; a ``ValueError`` names the bad key."""
    if cfg.difficulty not in _DEFAULTS:
        raise ValueError(f"traffic_junction: 'difficulty' must be one of {list(_DEFAULTS)}, got {cfg.difficulty!r}")
    if cfg.route_set not in ("all", "first_turn"):
        raise ValueError(f"traffic_junction: 'route_set' must be one of ['all', 'first_turn'], got {cfg.route_set!r}")
    if cfg.observation not in ("ic3net", "commnet"):
        raise ValueError(f"traffic_junction: 'observation' must be one of ['ic3net', 'commnet'], got {cfg.observation!r}")
    if cfg.slot_reuse not in ("same_step", "next_step"):
        raise ValueError(f"traffic_junction: 'slot_reuse' must be one of ['same_step', 'next_step'], got {cfg.slot_reuse!r}")
    d = _DEFAULTS[cfg.difficulty]
    vals = {k: (getattr(cfg, k) if getattr(cfg, k) is not None else d[k]) for k in d}
    for k in ("dim", "n_cars", "max_steps", "vision"):
        v = vals[k]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"traffic_junction: {k!r} must be an integer, got {v!r}")
    for k, lo in (("n_cars", 1), ("max_steps", 1), ("vision", 0)):
        if vals[k] < lo:
            raise ValueError(f"traffic_junction: {k!r} must be >= {lo}, got {vals[k]}")
    if vals["dim"] < _MIN_DIM[cfg.difficulty]:
        raise ValueError(
            f"traffic_junction: 'dim'={vals['dim']} is too small for difficulty={cfg.difficulty!r}: "
            f"{_WHY_MIN_DIM[cfg.difficulty]} need dim >= {_MIN_DIM[cfg.difficulty]}"
        )
    for k in ("add_rate_min", "add_rate_max"):
        if not 0.0 <= float(vals[k]) <= 1.0:
            raise ValueError(f"traffic_junction: {k!r} must lie in [0, 1], got {vals[k]}")
    for k in ("curriculum_start", "curriculum_end", "initial_progress"):
        if not 0.0 <= float(getattr(cfg, k)) <= 1.0:
            raise ValueError(f"traffic_junction: {k!r} must lie in [0, 1], got {getattr(cfg, k)}")
    if cfg.curriculum_end < cfg.curriculum_start:
        raise ValueError(
            f"traffic_junction: 'curriculum_end' ({cfg.curriculum_end}) must be >= 'curriculum_start' ({cfg.curriculum_start})"
        )
    for k in ("time_penalty", "collision_penalty"):
        if not np.isfinite(getattr(cfg, k)):
            raise ValueError(f"traffic_junction: {k!r} must be finite, got {getattr(cfg, k)}")
    return TrafficParams(
        difficulty=cfg.difficulty,
        dim=int(vals["dim"]),
        n_cars=int(vals["n_cars"]),
        max_steps=int(vals["max_steps"]),
        vision=int(vals["vision"]),
        add_rate_min=float(vals["add_rate_min"]),
        add_rate_max=float(vals["add_rate_max"]),
        curriculum_start=float(cfg.curriculum_start),
        curriculum_end=float(cfg.curriculum_end),
        route_set=cfg.route_set,
        observation=cfg.observation,
        slot_reuse=cfg.slot_reuse,
    )


def add_rate(progress: float, cfg: TrafficJunctionConfig | None = None) -> float:
    """The curriculum: entry probability at training fraction ``progress`` in ``[0, 1]``.

    ``add_rate_min`` before ``curriculum_start``, ``add_rate_max`` after ``curriculum_end``,
    linear in between (a step at ``curriculum_start`` if both ends coincide).
    """
    p = resolve(cfg if cfg is not None else TrafficJunctionConfig())
    progress = float(progress)
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"traffic_junction: 'progress' must lie in [0, 1], got {progress}")
    return p.add_rate_min + (p.add_rate_max - p.add_rate_min) * ramp(progress, p.curriculum_start, p.curriculum_end)


# ---------------------------------------------------------------------------------------- geometry
_STEP = {"S": (1, 0), "N": (-1, 0), "E": (0, 1), "W": (0, -1)}
_RIGHT_OF = {"S": "W", "W": "N", "N": "E", "E": "S"}
_LEFT_OF = {v: k for k, v in _RIGHT_OF.items()}


@dataclass(frozen=True)
class Layout:
    """Static geometry: road and junction masks ``(dim, dim)``, entries and routes.

    Attributes:
        road: bool mask of road cells.
        junction: bool mask of junction cells (where a horizontal and a vertical lane cross).
        entries: ``(row, col, heading)`` of each entry point, heading in ``N/S/E/W``.
        routes: per route, its cells ``(row, col)`` from entry to exit.
        entry_routes: ``(E, K)`` route ids of each entry (every entry has ``K`` routes).
        service_order: ``(E,)`` entry ids in the order a step draws its entries (IC3Net's
            ``routes`` list, which ``_add_cars`` walks: entry sides top, left on easy; top,
            bottom, left, right on medium; top, left, bottom, right on hard; along a side by
            increasing column or row). It decides which entries get the last free slots.
    """

    dim: int
    road: np.ndarray
    junction: np.ndarray
    entries: tuple[tuple[int, int, str], ...]
    routes: tuple[tuple[tuple[int, int], ...], ...]
    entry_routes: np.ndarray
    service_order: np.ndarray


# IC3Net's order of entry sides, by the heading of the cars entering there (S: from the top,
# E: from the left, N: from the bottom, W: from the right): _set_paths_easy and get_add_mat.
_SERVICE_SIDES = {"easy": "SE", "medium": "SNEW", "hard": "SENW"}


def _lanes(difficulty: str, dim: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Vertical lanes ``(col, heading)`` and horizontal lanes ``(row, heading)``; traffic keeps right."""
    if difficulty == "easy":
        m = dim // 2
        return [(m, "S")], [(m, "E")]
    if difficulty == "medium":
        m = dim // 2
        return [(m - 1, "S"), (m, "N")], [(m - 1, "W"), (m, "E")]
    a, c = dim // 3 - 2, 2 * dim // 3
    return [(a, "S"), (a + 1, "N"), (c, "S"), (c + 1, "N")], [(a, "W"), (a + 1, "E"), (c, "W"), (c + 1, "E")]


def _trace(start: tuple[int, int], heading: str, choices: list[str], junction: np.ndarray) -> tuple[list[tuple[int, int]], bool]:
    """Drive from ``start`` taking ``choices`` at successive junctions until the grid edge.

    Returns the cells and whether a junction was reached after the choices ran out.
    """
    dim = junction.shape[0]
    r, c = start
    path = [start]
    used = 0
    while True:
        dr, dc = _STEP[heading]
        nr, nc = r + dr, c + dc
        if not (0 <= nr < dim and 0 <= nc < dim):
            return path, False
        entering = bool(junction[nr, nc]) and not bool(junction[r, c])
        r, c = nr, nc
        path.append((r, c))
        if entering:
            if used == len(choices):
                return path, True
            choice = choices[used]
            used += 1
            if choice == "R":
                heading = _RIGHT_OF[heading]
            elif choice == "L":
                r, c = r + dr, c + dc
                path.append((r, c))
                heading = _LEFT_OF[heading]


@functools.lru_cache(maxsize=32)
def build_layout(difficulty: str, dim: int, route_set: str = "all") -> Layout:
    """The roads, entries and routes of a difficulty on a ``dim × dim`` grid (pure, cached)."""
    vert, horiz = _lanes(difficulty, dim)
    road = np.zeros((dim, dim), dtype=bool)
    on_v = np.zeros((dim, dim), dtype=bool)
    on_h = np.zeros((dim, dim), dtype=bool)
    for col, _ in vert:
        on_v[:, col] = True
    for row, _ in horiz:
        on_h[row, :] = True
    road = on_v | on_h
    junction = on_v & on_h
    entries: list[tuple[int, int, str]] = []
    for col, h in vert:
        entries.append((0, col, h) if h == "S" else (dim - 1, col, h))
    for row, h in horiz:
        entries.append((row, 0, h) if h == "E" else (row, dim - 1, h))
    options_all = ["S"] if difficulty == "easy" else ["S", "R", "L"]

    n_choice = 2 if route_set == "all" else 1  # junctions with a choice; straight on afterwards

    def options(k: int) -> list[str]:
        return options_all if k < n_choice else ["S"]

    routes: list[tuple[tuple[int, int], ...]] = []
    entry_routes: list[list[int]] = []
    for r0, c0, h in entries:
        mine: list[int] = []

        def explore(prefix: list[str]) -> None:
            path, more = _trace((r0, c0), h, prefix, junction)
            if more:
                for ch in options(len(prefix)):
                    explore(prefix + [ch])
            else:
                mine.append(len(routes))
                routes.append(tuple(path))

        explore([])
        entry_routes.append(mine)
    k = {len(m) for m in entry_routes}
    assert len(k) == 1, f"entries have different route counts {k}"
    sides = _SERVICE_SIDES[difficulty]
    order = sorted(range(len(entries)), key=lambda e: (sides.index(entries[e][2]), entries[e][1] if entries[e][2] in "SN" else entries[e][0]))
    return Layout(dim, road, junction, tuple(entries), tuple(routes), np.asarray(entry_routes, dtype=np.int64), np.asarray(order, dtype=np.int64))


# ---------------------------------------------------------------------------------------- the env
@register_env("traffic_junction", config=TrafficJunctionConfig)
class TrafficJunction(BatchedEnv):
    """Traffic junction (CommNet / IC3Net): cars cross junctions choosing gas or brake; group ``car``."""

    def __init__(self, cfg: TrafficJunctionConfig = TrafficJunctionConfig(), num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        p = self.params = resolve(cfg)
        lay = self.layout = build_layout(p.difficulty, p.dim, p.route_set)
        dev, B, N, D = self.device, num_envs, p.n_cars, p.dim
        self.n_routes = len(lay.routes)
        self.n_entries, self.routes_per_entry = lay.entry_routes.shape
        lmax = max(len(r) for r in lay.routes)
        cells = np.zeros((self.n_routes, lmax), dtype=np.int64)
        for i, r in enumerate(lay.routes):
            flat = [a * D + b for a, b in r]
            cells[i, : len(flat)] = flat
            cells[i, len(flat) :] = flat[-1]
        self._route_cells = torch.as_tensor(cells, device=dev)  # (R, Lmax) flat cell index
        self._route_len = torch.as_tensor([len(r) for r in lay.routes], device=dev, dtype=torch.long)
        self._entry_routes = torch.as_tensor(lay.entry_routes, device=dev)  # (E, K)
        self._service_order = torch.as_tensor(lay.service_order, device=dev)  # (E,) entry ids, drawn in this order
        self._service_pos = torch.argsort(self._service_order)  # (E,) each entry's place in that order
        v = p.vision
        self._win = 2 * v + 1
        padded = np.zeros((D + 2 * v, D + 2 * v), dtype=np.float32)
        padded[v : v + D, v : v + D] = lay.road
        self._road_pad = torch.as_tensor(padded.reshape(-1), device=dev)
        dr, dc = np.meshgrid(np.arange(self._win), np.arange(self._win), indexing="ij")
        self._win_offsets = torch.as_tensor((dr * (D + 2 * v) + dc).reshape(-1), device=dev, dtype=torch.long)
        self._slot = torch.arange(N, device=dev)
        self._other = ~torch.eye(N, dtype=torch.bool, device=dev)  # (N, N): pairs of distinct slots
        road_ids = np.full(D * D, 0, dtype=np.int64)
        road_ids[lay.road.reshape(-1)] = np.arange(int(lay.road.sum()))
        self.n_road = int(lay.road.sum())
        self._road_id = torch.as_tensor(road_ids, device=dev)  # flat cell -> road-cell id (row-major)
        obs_dim = N + self.n_routes + self.n_road + 2 * self._win**2
        if p.observation == "commnet":
            obs_dim += self.n_routes + N
        self.spec = EnvSpec(
            "traffic_junction",
            {"car": group_spec("car", N, obs_dim, gspaces.Discrete(2))},
            max_steps=p.max_steps,
            state_shape=(D * D,),
            info_keys=("success", "collisions", "exited", "add_rate"),
        )
        # world state, each (B, ...)
        z = torch.zeros(B, N, dtype=torch.long, device=dev)
        self.on_grid = torch.zeros(B, N, dtype=torch.bool, device=dev)
        self.route, self.pos, self.tau = z.clone(), z.clone(), z.clone()
        self.collided = torch.zeros(B, dtype=torch.bool, device=dev)
        self.n_collisions = torch.zeros(B, dtype=torch.long, device=dev)
        self.n_exited = torch.zeros(B, dtype=torch.long, device=dev)
        self.add_rate = torch.full((B,), add_rate(cfg.initial_progress, cfg), device=dev)
        self.key = torch.zeros(B, dtype=torch.long, device=dev)
        self.counter = torch.zeros(B, dtype=torch.long, device=dev)

    # ------------------------------------------------------------------ curriculum
    def set_progress(self, fraction: float) -> float:
        """Set the training fraction (``[0, 1]``) of every copy; returns the add rate it implies."""
        rate = add_rate(fraction, self.cfg)
        self.add_rate = torch.full_like(self.add_rate, rate)
        return rate

    # ------------------------------------------------------------------ helpers
    def car_cells(self) -> Tensor:
        """``(B, N)`` int64 flat cell index ``row·dim + col`` of each car; ``dim²`` for free slots."""
        D2 = self.params.dim**2
        cell = self._route_cells[self.route, self.pos.clamp(max=self._route_cells.shape[1] - 1)]
        return torch.where(self.on_grid, cell, torch.full_like(cell, D2))

    def next_cells(self) -> Tensor:
        """``(B, N)`` int64 cell each car would reach on gas; ``dim²`` if it would leave or is absent."""
        D2 = self.params.dim**2
        nxt = self.pos + 1
        cell = self._route_cells[self.route, nxt.clamp(max=self._route_cells.shape[1] - 1)]
        ok = self.on_grid & (nxt < self._route_len[self.route])
        return torch.where(ok, cell, torch.full_like(cell, D2))

    def occupancy(self) -> Tensor:
        """``(B, dim²)`` int64 number of cars per cell."""
        D2 = self.params.dim**2
        cnt = torch.zeros(self.num_envs, D2 + 1, dtype=torch.long, device=self.device)
        cnt.scatter_add_(1, self.car_cells(), torch.ones_like(self.route))
        return cnt[:, :D2]

    # ------------------------------------------------------------------ hooks
    def _reset_copies(self, mask: Tensor) -> None:
        keys = new_keys(self.num_envs, self.rng, self.device)
        m2 = mask[:, None]
        self.on_grid = self.on_grid & ~m2
        self.route = torch.where(m2, torch.zeros_like(self.route), self.route)
        self.pos = torch.where(m2, torch.zeros_like(self.pos), self.pos)
        self.tau = torch.where(m2, torch.zeros_like(self.tau), self.tau)
        self.collided = self.collided & ~mask
        self.n_collisions = torch.where(mask, torch.zeros_like(self.n_collisions), self.n_collisions)
        self.n_exited = torch.where(mask, torch.zeros_like(self.n_exited), self.n_exited)
        self.key = torch.where(mask, keys, self.key)
        self.counter = torch.where(mask, torch.zeros_like(self.counter), self.counter)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        p = self.params
        B, N, E, K = self.num_envs, p.n_cars, self.n_entries, self.routes_per_entry
        D2 = p.dim**2
        # 1. move and leave
        gas = (actions["car"] == GAS) & self.on_grid
        self.tau = self.tau + self.on_grid.long()
        self.pos = self.pos + gas.long()
        exited = gas & (self.pos >= self._route_len[self.route])
        self.on_grid = self.on_grid & ~exited
        # 2. entries (entry e admits its car if a slot is free). same_step (IC3Net): a slot freed
        # in step 1 is free, but taken only after the slots free before the step, so that alive
        # drops wherever the number of cars allows. next_step: it is busy until the next step.
        u = stream_uniform(self.key, self.counter, 2 * E + N)
        self.counter = self.counter + 1
        busy = self.on_grid if p.slot_reuse == "same_step" else self.on_grid | exited
        want = u[:, :E] < self.add_rate[:, None]
        rank = want[:, self._service_order].long().cumsum(1)[:, self._service_pos]  # (B, E): 1 + earlier wanting entries
        accept = want & (busy.sum(1, keepdim=True) + rank <= N)
        pick = (u[:, E : 2 * E] * K).long().clamp(max=K - 1)
        new_route = self._entry_routes[torch.arange(E, device=self.device)[None, :], pick]  # (B, E)
        # sort key: [0, 1) free before the step, [1, 2) freed in it, [2, 3) taken; shuffled within
        free_first = torch.argsort(u[:, 2 * E :] + 2.0 * self.on_grid.float() + (2.0 if p.slot_reuse == "next_step" else 1.0) * exited.float(), dim=1)
        slot = free_first.gather(1, (rank - 1).clamp(0, N - 1))
        slot = torch.where(accept, slot, torch.full_like(slot, N))  # column N = discarded
        entered = torch.zeros(B, N + 1, dtype=torch.bool, device=self.device).scatter_(1, slot, accept)[:, :N]
        routes_ext = F.pad(self.route, (0, 1)).scatter(1, slot, new_route)[:, :N]
        self.route = torch.where(entered, routes_ext, self.route)
        self.pos = torch.where(entered, torch.zeros_like(self.pos), self.pos)
        self.tau = torch.where(entered, torch.zeros_like(self.tau), self.tau)
        self.on_grid = self.on_grid | entered
        # 3. collisions and rewards
        cell = self.car_cells()
        cnt = torch.zeros(B, D2 + 1, dtype=torch.long, device=self.device).scatter_add_(1, cell, torch.ones_like(cell))
        crashed = self.on_grid & (cnt.gather(1, cell) >= 2)
        n_cells = (cnt[:, :D2] >= 2).sum(1)
        self.collided = self.collided | (n_cells > 0)
        self.n_collisions = self.n_collisions + n_cells
        self.n_exited = self.n_exited + exited.sum(1)
        cfg = self.cfg
        r = -cfg.time_penalty * self.tau.float() - cfg.collision_penalty * crashed.float()
        r = torch.where(self.on_grid, r, torch.zeros_like(r))
        info = {
            "success": (~self.collided).float(),
            "collisions": self.n_collisions.float(),
            "exited": self.n_exited.float(),
            "add_rate": self.add_rate.clone(),
            "completed": exited,  # (B, N), not an info_key: per slot, not per episode
        }
        return {"car": r}, torch.zeros(B, dtype=torch.bool, device=self.device), info

    def _observe(self) -> dict[str, Tensor]:
        p = self.params
        B, N, D, v = self.num_envs, p.n_cars, p.dim, p.vision
        D2, W = D * D, D + 2 * v
        cell = self.car_cells()
        cnt = torch.zeros(B, D2 + 1, dtype=torch.float32, device=self.device).scatter_add_(1, cell, torch.ones(B, N, device=self.device))
        pad = F.pad(cnt[:, :D2].view(B, D, D), (v, v, v, v)).reshape(B, -1)
        safe = torch.where(self.on_grid, cell, torch.zeros_like(cell))
        base = (safe // D) * W + (safe % D)  # top-left corner of the window in padded coordinates
        idx = base[..., None] + self._win_offsets  # (B, N, K)
        k2 = self._win**2
        cars = pad.gather(1, idx.view(B, -1)).view(B, N, k2)
        cars[..., k2 // 2] -= 1.0  # other cars only
        road = self._road_pad[idx]
        on = self.on_grid.float()
        R = self.n_routes
        hot = torch.stack([self._slot.expand(B, N), N + self.route, N + R + self._road_id[safe]], -1)  # (B, N, 3)
        obs = torch.zeros(B, N, self.spec.groups["car"].obs_shape[0], device=self.device)
        obs.scatter_(2, hot, on[..., None].expand(B, N, 3))
        off = N + R + self.n_road
        obs[..., off : off + k2] = road * on[..., None]
        obs[..., off + k2 : off + 2 * k2] = cars * on[..., None]
        if p.observation == "commnet":
            # the other cars inside the window, as CommNet's bag of their words: routes and slots
            rc = torch.stack([safe // D, safe % D], -1)  # (B, N, 2)
            near = (rc[:, :, None, :] - rc[:, None, :, :]).abs().amax(-1) <= v
            near = near & self.on_grid[:, :, None] & self.on_grid[:, None, :] & self._other
            seen = near.float()  # (B, N, N): car i sees car j
            off2 = off + 2 * k2
            obs[..., off2 : off2 + R] = seen @ F.one_hot(self.route, R).float()
            obs[..., off2 + R :] = seen
        return {"car": obs}

    def _global_state(self) -> Tensor:
        return self.occupancy().float()

    def _alive(self) -> dict[str, Tensor]:
        return {"car": self.on_grid.clone()}

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {
            "on_grid": self.on_grid, "route": self.route, "pos": self.pos, "tau": self.tau,
            "collided": self.collided, "n_collisions": self.n_collisions, "n_exited": self.n_exited,
            "add_rate": self.add_rate, "key": self.key, "counter": self.counter,
        }

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        R, lens = self.n_routes, self._route_len
        if bool(((state["route"] < 0) | (state["route"] >= R)).any()):
            raise ValueError(f"traffic_junction: set_state['route'] must lie in [0, {R}), got {state['route'].min().item()}..{state['route'].max().item()}")
        pos_ok = (state["pos"] >= 0) & (state["pos"] < lens[state["route"]])
        if bool((state["on_grid"] & ~pos_ok).any()):
            raise ValueError("traffic_junction: set_state['pos'] must lie in [0, route length) for cars on the grid")
        for k, v in state.items():
            setattr(self, k, v)

    # ------------------------------------------------------------------ rendering
    def render(self, cell_px: int = 20) -> np.ndarray:
        """Copy 0: roads (grey), junctions (darker), each car (a disc in its slot's colour) with its
        route drawn as a line, and cells holding two or more cars ringed in red."""
        D, lay = self.params.dim, self.layout
        img = canvas(D * cell_px, D * cell_px, (34, 85, 34))
        for r in range(D):
            for c in range(D):
                if lay.road[r, c]:
                    col = (150, 150, 150) if lay.junction[r, c] else (200, 200, 200)
                    fill_rect(img, c * cell_px + 1, r * cell_px + 1, (c + 1) * cell_px - 1, (r + 1) * cell_px - 1, col)
        alive = self.on_grid[0].cpu().numpy()
        route = self.route[0].cpu().numpy()
        cells = self.car_cells()[0].cpu().numpy()
        occ = self.occupancy()[0].cpu().numpy()
        half = cell_px / 2
        for i in np.flatnonzero(alive):
            pts = lay.routes[int(route[i])]
            for (r0, c0), (r1, c1) in zip(pts, pts[1:]):
                draw_line(img, c0 * cell_px + half, r0 * cell_px + half, c1 * cell_px + half, r1 * cell_px + half, palette(int(i)))
        for i in np.flatnonzero(alive):
            r, c = divmod(int(cells[i]), D)
            draw_disc(img, c * cell_px + half, r * cell_px + half, cell_px * 0.35, palette(int(i)))
        for flat in np.flatnonzero(occ >= 2):
            r, c = divmod(int(flat), D)
            draw_disc(img, c * cell_px + half, r * cell_px + half, cell_px * 0.48, (220, 30, 30), outline=None)
            draw_disc(img, c * cell_px + half, r * cell_px + half, cell_px * 0.3, (255, 255, 255))
        return img


# ---------------------------------------------------------------------------------------- baselines
def always_gas(env: TrafficJunction) -> dict[str, Tensor]:
    """Every car drives on: actions ``(B, N)`` all ``GAS``."""
    return {"car": torch.full((env.num_envs, env.params.n_cars), GAS, dtype=torch.long, device=env.device)}


def next_cell_taken(env: TrafficJunction) -> Tensor:
    """``(B, N)`` bool: the next cell of the car's route holds a car (False for absent or leaving cars)."""
    occ = F.pad(env.occupancy(), (0, 1))  # column dim² (leaving / absent) is always free
    return occ.gather(1, env.next_cells()) > 0


def brake_if_occupied(env: TrafficJunction) -> dict[str, Tensor]:
    """A car brakes when the next cell of its route holds a car, else drives on (``(B, N)``)."""
    return {"car": torch.where(next_cell_taken(env), BRAKE, GAS).long()}


def reservation(env: TrafficJunction) -> dict[str, Tensor]:
    """A *centralised* collision-free policy (it sees every car): an upper bound, not a learner's baseline.

    Every car asks for its next cell; conflicts are resolved until none is left: a cell that a
    braking car keeps is refused to every car that would enter it, and among the cars entering
    the same free cell only the one with the highest priority drives on (a car still on its
    entry cell first, so that a new car cannot land on it; then the car that has been on the
    grid longest; then the lower slot). Braking only frees cells, so the loop ends after at
    most ``N`` rounds. Returns actions ``(B, N)``.
    """
    B, N, T = env.num_envs, env.params.n_cars, env.params.max_steps
    D2 = env.params.dim**2
    cur, nxt, on = env.car_cells(), env.next_cells(), env.on_grid
    # priority key, smaller first and distinct within a copy: (off its entry cell, steps left, slot)
    age = T - env.tau.clamp(max=T)
    key = ((env.pos > 0).long() * (T + 1) + age) * N + torch.arange(N, device=env.device)
    big = torch.iinfo(torch.long).max
    moving = on.clone()
    for _ in range(N + 1):
        final = torch.where(moving, nxt, cur)  # dim² = off the grid (absent or leaving)
        held = torch.zeros(B, D2 + 1, dtype=torch.bool, device=env.device).scatter_(1, torch.where(on & ~moving, cur, D2), True)
        held[:, D2] = False  # column dim² collects absent cars, never a real cell
        best = torch.full((B, D2 + 1), big, dtype=torch.long, device=env.device).scatter_reduce(1, final, torch.where(moving, key, big), reduce="amin")
        lose = moving & (final < D2) & (held.gather(1, final) | (best.gather(1, final) != key))
        if not bool(lose.any()):
            break
        moving = moving & ~lose
    return {"car": torch.where(moving, GAS, BRAKE).long()}


# ---------------------------------------------------------------------------------------- diagnosis
CONFLICT_KINDS = ("crossing", "rear_end", "shared")
"""The causes ``conflicts`` tells apart, in the order of precedence used for a cell with several."""


def conflicts(env: TrafficJunction, actions: dict[str, Tensor]) -> dict[str, Tensor]:
    """Why the next step will collide: the cells where cars already on the grid will meet, by cause.

    Call it *before* ``env.step(actions)``. Every collision cell of that step among the cars now on
    the grid gets one cause, the first that applies:

    - ``crossing``: two cars that both drive on, from different cells, enter the same cell (two
      streams meeting in a junction: one of them had to yield);
    - ``rear_end``: a car drives on into the cell of a car that brakes;
    - ``shared``: the cars were already in one cell and stay together (both brake, or drive on
      along the same route): an earlier collision that goes on.

    The step's remaining collision cells are *entries*: a new car arrives on an occupied entry
    cell (``info["collisions"]`` grows by the three counts plus the entries). Success only
    depends on the first collision of an episode, so ``benchmarks/tj_collisions.py`` reports the
    cause of that one.

    Returns ``{kind: (B,) int64}`` counts of cells per copy.
    """
    a = actions["car"]
    B, N = env.num_envs, env.params.n_cars
    if a.shape != (B, N):
        raise ValueError(f"conflicts: actions of group 'car' have shape {tuple(a.shape)}, expected ({B}, {N})")
    D2 = env.params.dim**2
    on, cur = env.on_grid, env.car_cells()
    gas = on & (a == GAS)
    new = torch.where(gas, env.next_cells(), cur)  # dim² = off the grid (absent or leaving)
    meet = (new[:, :, None] == new[:, None, :]) & (new[:, :, None] < D2)
    meet = meet & env._other
    apart = cur[:, :, None] != cur[:, None, :]
    pair = {
        "crossing": meet & apart & gas[:, :, None] & gas[:, None, :],
        "rear_end": meet & apart & (gas[:, :, None] ^ gas[:, None, :]),
        "shared": meet & ~apart,
    }
    taken = torch.zeros(B, D2 + 1, dtype=torch.bool, device=env.device)
    out: dict[str, Tensor] = {}
    for kind in CONFLICT_KINDS:
        cells = torch.zeros(B, D2 + 1, dtype=torch.bool, device=env.device)
        cells.scatter_(1, torch.where(pair[kind].any(2), new, D2), True)
        cells[:, D2] = False
        cells &= ~taken
        taken |= cells
        out[kind] = cells.sum(1)
    return out
