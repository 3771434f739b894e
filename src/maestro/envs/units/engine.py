"""Continuous unit combat: a batched StarCraft: Brood War-style micromanagement simulator with the
three "hard combat" scenarios of MS-MARL (Kong et al. 2017, arXiv 1712.07305, §4.2 and Table 2;
from Peng et al. 2017, BiCNet, arXiv 1703.10069): 15 Marines vs 16 Marines (``m15v16``),
10 Marines vs 13 Zerglings (``m10v13z``) and 15 Wraiths vs 17 Wraiths (``w15v17``).

One registered env, ``unit_combat``, with ``scenario=`` choosing the teams: the three scenarios
differ only in data (unit types, counts, spawn gap), so one class and one config keep the engine,
the tests and a recipe's ``--set env.scenario=...`` in one place. ``B`` copies and all ``U = N + M``
units step together on ``(B, U, ...)`` tensors; nothing loops over copies or units.

Units (Brood War statistics, no upgrades; checked in BWAPI ``bwapi/BWAPILIB/Source/UnitType.cpp``
and ``WeaponType.cpp``, github.com/bwapi/bwapi; cooldown jitter from OpenBW ``bwgame.h``,
github.com/OpenBW/openbw). Distances are in pixels (1 tile = 32 px), time in game frames:

============  ====  =====  =====================================  ==========  ==============  ======
unit          HP    armor  weapon: damage / cooldown / max range  top speed   box l,u,r,d     layer
============  ====  =====  =====================================  ==========  ==============  ======
Marine        40    0      Gauss Rifle 6 normal / 15 / 128 (g+a)  4.0 px/f    8, 9, 8, 10     ground
Zergling      35    0      Claws 5 normal / 8 / 15 (ground only)  5.49 px/f   8, 4, 7, 11     ground
Wraith        120   0      Gemini Missiles 20 explosive / 22 /    6.67 px/f   19, 15, 18, 14  air
                           160 (air); Burst Lasers 8 / 30 / 160
                           (ground)
============  ====  =====  =====================================  ==========  ==============  ======

Sizes (damage-type scaling): Marine and Zergling small, Wraith large; explosive damage does 50% to
small, 75% to medium, 100% to large units, normal damage 100% to all (so 6, 5 and 20 per shot in
the three scenarios). Sight ranges 7, 5 and 7 tiles. After a shot the cooldown is the weapon's
plus a jitter uniform in ``{-1, 0, 1, 2}`` frames (OpenBW: ``cooldown + (lcg_rand(12) & 3) - 1``).

Physics of one env step = ``frames_per_step`` (8) game frames (1/3 s at "Fastest", ≈ 24 frames/s: 42 ms a frame),
all units at once from the state at the start of the step:

1. Orders. An agent's BiCNet action ``a = (kind, angle, distance) ∈ [-1, 1]^3`` points at the
   location ``p = x + d (cos θ, sin θ)`` with ``θ = π·angle`` (world frame) and
   ``d = (distance + 1)/2 · action_radius`` (7 tiles); ``kind > 0`` attacks the living enemy
   nearest to ``p``, otherwise the unit moves toward ``p``. (``action="target"``, not the paper's: a
   discrete hold / move in 8 directions / attack enemy ``j``, with masks; see the config.) Bots
   follow the built-in AI (below).
2. Attacks. Ranges are measured edge to edge: centre distance minus both units' radii (a disc of
   radius = the mean of the four BWAPI box extents: 8.75, 7.5, 16.5 px). An attacker out of range
   moves toward its target at top speed until it is in range (arriving ``ceil(gap / speed)``
   frames later); a unit in range stands and fires when its cooldown runs out. Every shot of the
   step lands at once (hit points summed; instant hits, no projectile flight), so a unit killed in
   a step still fires its shots of that step and several units may shoot one target past zero
   (overkill). A unit whose cooldown allows it can fire more than once in one step (a Zergling,
   cooldown 7-10 frames, sometimes twice in 8 frames); cooldowns carry over in whole frames.
3. Moves of move orders at top speed, stopping at the pointed location; dead units do not move.
4. Collisions. Living ground units are discs that may not overlap: ``collision_iters`` (2) rounds
   of pairwise separation push each overlapping pair apart along the line of centres by half the
   overlap each (SMAX's ``_push_units_away`` does one such round per world step); units stacked on
   one point are told apart by a fixed 0.01 px offset per unit. An isolated pair never overlaps
   after a step; a crowd's overlaps shrink with each round but may remain. Flying units (Wraiths) pass over each other and over ground
   units: no separation at all (BW's slow air-unit repulsion is left out). Units stay on the
   ``map_tiles`` × ``map_tiles`` map (64 × 64 tiles).
5. Deaths (hit points <= 0), then the outcome: a team with no living unit loses; both teams dead
   in one step, or both alive after ``max_steps`` (200 steps = 1600 frames ≈ 67 s), is a draw.

The built-in opponent (team ``M``, part of the env): BW's attack-move. Each bot keeps its current
target while that target lives and stays within the bot's acquisition range; otherwise it acquires
the closest enemy (edge distance) it can attack within acquisition range, preferring units that
can attack it back (BW ``unit_target_attack_priority``: priority 0 for a unit that can attack the
acquirer, 2 for one that cannot; closest within the best priority, OpenBW ``find_acquire_target``);
with no target it moves toward the centroid of our living units (attack-move onto our army), or
with ``bot_idle="hold"`` stays where it is. An acquired target is attacked as above (chased until
in range, then fired upon). The acquisition range is OpenBW's (``bwgame.h``: at game start every
type's ``target_acquisition_range`` becomes ``max(units.dat's value, weapon max_range / 32)`` tiles,
and ``find_acquire_target`` looks that far by edge distance): with units.dat's values as BWAPI's
``seekRange`` gives them (Marine 0, Zergling 3, Wraith 0 tiles) that is 4 tiles for a Marine (its
128 px weapon), 3 for a Zergling, 5 for a Wraith (160 px). ``bot_acquisition="sight"`` uses the
sight range instead (7, 5, 7 tiles: a keener bot that engages earlier, this env's rule before).

Spawn (seeded, per copy): our team left of the map centre, the enemy right of it, group centres
``spawn_gap`` tiles apart (10 for m15v16 and w15v17, 12 for m10v13z); each team stands in a block
of columns of at most 8 units, spaced one unit diameter + 8 px, the front column facing the
enemy; each episode shifts each block by up to ±``group_noise`` px (16) and each unit by up to
±``unit_noise`` px (4), uniformly per axis. (``curriculum_enemies``, not the paper's: battles start
with fewer living enemies, the back column thinned first, as a trainer's ``set_progress`` says.)

Observation of agent ``i`` (``(B, N, 7 + 9U)`` float32, zeros for dead agents): own
``x/W, y/W`` (W = map width in px), ``hp/max_hp``, ``cooldown/weapon cooldown``, unit type
one-hot (marine, zergling, wraith); then one token of 9 features for every unit ``u`` in a fixed
order (agents, then enemies): ``visible, Δx/R, Δy/R, hp/max_hp, cooldown/weapon cooldown, enemy,
type one-hot(3)``, all zero unless ``u`` is alive, not ``i`` itself and within the view circle of
radius ``view_radius`` (7 tiles, R = 224 px, centre distance) of ``i``. The tokens are stored
feature-major, ``(9, U)`` flattened (feature ``f`` of unit ``u`` at ``7 + f·U + u``): written
that way the observation costs half as much per step. Fixed slots instead of a
distance-sorted k-nearest list: the same information (the ``visible`` bit is the mask), no sort in
the step, and a slot keeps naming the same unit through the episode; ``tokens(obs, U)`` reshapes an
observation into ``(own (…, 7), tokens (…, U, 9), mask (…, U))`` for entity-attention networks.

Global state (``(B, G²)`` float32, ``G = state_grid``): MS-MARL's master input, the occupancy map of
our living units (count per cell of a ``G × G`` grid over the map, ``G = 32``: 2 × 2 tiles).

Reward (MS-MARL eqs. (2)–(3)): per agent and step ``Δn_own(i) − Δn_enemy(i)`` over the units within
``reward_radius`` (7 tiles, centre distance) of agent ``i``; with ``reward_counts="deaths"``
(default) the neighbourhood is the one at the start of the step, so ``Δn`` counts the deaths in it
this step (the paper's "change of the number of our units in the neighbouring area"; moving away
from enemies earns nothing); ``"moving"`` recounts the neighbourhood at the end of the step (the
formula read literally, as ``combat``'s ``reward="ms_marl"`` does). Agents dead before the step get
0; at the last step every agent, dead or alive, gets ``win_reward`` (1) for a won battle and
``nonwin_reward`` (−0.2) otherwise. Read this way, eq. (2) pays a doomed agent for dying early:
alive, it takes −1 for each neighbour that dies; dead, it takes nothing more (an incentive found
while diagnosing the learning check, docs/unit_combat.md; not shown to be what stops learning).
``reward_scope="team"`` departs from the paper on purpose: every agent, dead or alive, gets the
whole map's ``Δn_own − Δn_enemy`` each step. ``info`` (``(B,)`` float32, read where done): ``win``, ``draw``,
``terminal_reward``, ``own_units``, ``enemy_units``, ``own_hp``, ``enemy_hp`` (left at the end).

Departures from Brood War, on purpose: discs instead of BW's unit boxes and Euclidean instead of
BW's octagonal ``xy_length`` for ranges and collisions; instant acceleration and turning (BW:
Marines and Zerglings accelerate in a frame, Wraiths over several); collisions as pair separation
instead of BW's unit pathing and pushing; all shots of a step resolve together (deaths inside a
step do not stop a shot of the same step); no projectile travel time, no miss chance, no air-unit
repulsion; BW's idle units rescan for targets every 15 frames (``order_PlayerGuard``), here every
step; the bots' attack-move target is our army's centroid (the maps' own triggers were not
available). Per-step randomness (cooldown jitter) comes from per-copy
hash streams (``grid/common.py``) so that a batch equals its copies replayed alone; the spawn draws
from the env's generator, only for the copies being reset.

Scripted baselines (privileged: they read the simulator state, as the real game's scripts would):
``attack_closest``, ``focus_fire`` (the weakest enemy in range, else the closest) and
``focus_fire_no_overkill`` (the same, but no more shots at an enemy in one step than its hit points
need); ``benchmarks/unit_combat_scripted.py`` reports their win rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, group_spec
from maestro.envs.buffers import OutputPool
from maestro.envs.grid.common import new_keys, ramp, stream_uniform
from maestro.envs.render import canvas, draw_disc, draw_line, fill_rect
from maestro.registry import register_env
from maestro.spec import EnvSpec

TILE = 32.0
"""pixels per tile"""


@dataclass(frozen=True)
class Weapon:
    """One BW weapon (``WeaponType.cpp``): damage per hit, damage type, cooldown (frames), max range (px)."""

    damage: float
    kind: Literal["normal", "explosive", "concussive"]
    cooldown: int
    max_range: float


@dataclass(frozen=True)
class UnitType:
    """A BW unit type (``UnitType.cpp``); ``box`` = (left, up, right, down) px around the centre."""

    name: str
    hp: float
    armor: float
    size: Literal["small", "medium", "large"]
    flying: bool
    speed: float
    box: tuple[int, int, int, int]
    sight_tiles: int
    seek_tiles: int
    ground_weapon: Weapon | None
    air_weapon: Weapon | None

    @property
    def acquire_tiles(self) -> int:
        """OpenBW's target acquisition range: ``max(seek_tiles, weapon max_range // 32)`` tiles."""
        return max([self.seek_tiles] + [int(w.max_range) // 32 for w in (self.ground_weapon, self.air_weapon) if w is not None])

    @property
    def radius(self) -> float:
        """Radius of the disc standing for the unit box: the mean of its four extents (px)."""
        return sum(self.box) / 4.0


MARINE = UnitType("marine", 40, 0, "small", False, 4.0, (8, 9, 8, 10), 7, 0,
                  Weapon(6, "normal", 15, 128), Weapon(6, "normal", 15, 128))
ZERGLING = UnitType("zergling", 35, 0, "small", False, 5.49, (8, 4, 7, 11), 5, 3, Weapon(5, "normal", 8, 15), None)
WRAITH = UnitType("wraith", 120, 0, "large", True, 6.67, (19, 15, 18, 14), 7, 0,
                  Weapon(8, "normal", 30, 160), Weapon(20, "explosive", 22, 160))
UNIT_TYPES: tuple[UnitType, ...] = (MARINE, ZERGLING, WRAITH)
"""the unit types in observation one-hot order"""

_DAMAGE_SCALE = {  # BW damage type x unit size
    "normal": {"small": 1.0, "medium": 1.0, "large": 1.0},
    "explosive": {"small": 0.5, "medium": 0.75, "large": 1.0},
    "concussive": {"small": 1.0, "medium": 0.5, "large": 0.25},
}

SCENARIOS: dict[str, tuple[UnitType, int, UnitType, int, float]] = {
    "m15v16": (MARINE, 15, MARINE, 16, 10.0),
    "m10v13z": (MARINE, 10, ZERGLING, 13, 12.0),
    "w15v17": (WRAITH, 15, WRAITH, 17, 10.0),
}
"""scenario -> (our type, N, enemy type, M, spawn gap in tiles)"""

OWN_FEATURES = 4 + len(UNIT_TYPES)
TOKEN_FEATURES = 6 + len(UNIT_TYPES)


@dataclass(frozen=True)
class UnitCombatConfig:
    """Unit combat settings (defaults: the MS-MARL / BiCNet setting, see the module docstring)."""

    scenario: Literal["m15v16", "m10v13z", "w15v17"] = "m15v16"
    """which battle: 15 Marines vs 16 Marines, 10 Marines vs 13 Zerglings, 15 Wraiths vs 17 Wraiths"""
    frames_per_step: int = 8
    """game frames simulated per env step (24 frames = 1 s of game time at Fastest)"""
    max_steps: int = 200
    """episode length in steps; reaching it with both teams alive is a draw"""
    map_tiles: int = 64
    """side of the square map in tiles (32 px each)"""
    spawn_gap: float = 0.0
    """distance between the two groups' centres in tiles; 0 = the scenario's (10, or 12 for m10v13z)"""
    group_noise: float = 16.0
    """per-episode shift of each team's block, uniform in ±group_noise px per axis"""
    unit_noise: float = 4.0
    """per-episode shift of each unit, uniform in ±unit_noise px per axis"""
    view_radius: float = 7.0
    """radius (tiles) of the circle each agent observes (MS-MARL, Fig. 3)"""
    action_radius: float = 7.0
    """largest distance (tiles) an action can point at (action[2] = 1)"""
    reward_radius: float = 7.0
    """radius (tiles) of the neighbourhood of eq. (2)"""
    reward_counts: Literal["deaths", "moving", "hp"] = "deaths"
    """eq. (2) over the neighbourhood at the start of the step (deaths) or recounted at its end
    (moving); ``hp``: hit points lost instead of units, each unit's in units of its maximum (a kill
    of a full-health unit is 1), the hit-point form of BiCNet's reward (not the paper's eq. (2))"""
    reward_scope: Literal["local", "team"] = "local"
    """``local``: eq. (2) over each agent's ``reward_radius`` circle, 0 once the agent is dead (the
    paper's); ``team``: the deaths of the whole map, the same for every agent, dead or alive (no
    reward for dying early; see the module docstring). Over the whole map ``moving`` and ``deaths``
    count the same thing (no unit leaves the map), so ``team`` computes both from deaths"""
    win_reward: float = 1.0
    """eq. (3): terminal reward of a won battle"""
    nonwin_reward: float = -0.2
    """eq. (3): terminal reward of a lost or drawn battle"""
    draw_reward: float | None = None
    """terminal reward of a draw; ``None``: ``nonwin_reward``, as eq. (3). Not the paper's when set:
    a draw made costlier than a loss takes away the run to the time limit (docs/unit_combat.md)"""
    state_grid: int = 32
    """side of the master's occupancy grid over the map"""
    collision_iters: int = 2
    """rounds of pairwise separation of overlapping ground units per step"""
    bot_idle: Literal["attack_move", "hold"] = "attack_move"
    """what a bot with no target does: attack-move onto our army's centroid, or hold its ground
    (it still acquires and chases what enters its acquisition range)"""
    bot_retaliate: bool = False
    """BW's reaction to being hit (OpenBW ``on_unit_damage``): a bot hit by one of our units, and
    every bot within a 96-px box of it, switches to the attacker when it has no target or its
    target is out of weapon range while the attacker is in range; a target so taken is kept while
    it lives and stays within the bot's sight range (BW chases an attacker it can see)"""
    action: Literal["bicnet", "target"] = "bicnet"
    """``bicnet``: BiCNet's 3-d continuous pointing action (the paper's, module docstring); ``target``:
    a discrete action, not the paper's: ``0`` hold, ``1..8`` move one step's travel toward compass
    direction ``k - 1`` (east, then every 45° toward +y), ``8 + j`` (``j = 1..M``) attack enemy
    ``j - 1`` (chased if out of range, as the pointing action's attack), with legal-action masks
    (every living agent may hold or move, and attack every living enemy; a dead agent only holds);
    an illegal action holds. A probe of the learning check: whether naming a target, instead of
    pointing at it, lets a learner find focus fire (docs/unit_combat.md)"""
    angle: Literal["clip", "wrap"] = "clip"
    """the BiCNet action's angle component: ``clip``, BiCNet's box ``[-1, 1]`` (a Gaussian policy's
    sample is clipped to it, so both bounds, ``θ = ±π``, point west, and a mean that drifts past a
    bound stops exploring the angle); ``wrap``, not the paper's: the angle's Box is unbounded and
    ``θ = π·angle`` wraps around the circle, so every real number is a direction and a policy's
    sample is never clipped in that component (a probe of the learning check, docs/unit_combat.md)"""
    curriculum_enemies: int = 0
    """a curriculum over the enemy count, not the paper's (0: none, every battle has the scenario's
    ``M`` enemies): a battle starts with ``k`` living enemies (the first ``k`` of the formation, its
    back column thinned first), ``k`` rising linearly from ``curriculum_enemies`` to ``M`` between the
    training fractions ``curriculum_start`` and ``curriculum_end``; a trainer that follows
    ``set_progress`` (MS-MARL's) moves it, and a fresh env stands at ``initial_progress``"""
    curriculum_start: float = 0.0
    """training fraction where the enemy count starts to rise from ``curriculum_enemies``"""
    curriculum_end: float = 0.5
    """training fraction where the enemy count reaches the scenario's ``M``"""
    initial_progress: float = 1.0
    """the training fraction a fresh env starts at (1: the full scenario, as for evaluation)"""
    bot_acquisition: Literal["openbw", "sight"] = "openbw"
    """the bots' target acquisition range: OpenBW's (``max(units.dat, weapon range)``: 4 tiles for a
    Marine, 3 Zergling, 5 Wraith) or the sight range (7, 5, 7 tiles)"""

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unit_combat: 'scenario' must be one of {sorted(SCENARIOS)}, got {self.scenario!r}")
        if self.bot_idle not in ("attack_move", "hold"):
            raise ValueError(f"unit_combat: 'bot_idle' must be one of ['attack_move', 'hold'], got {self.bot_idle!r}")
        if self.action not in ("bicnet", "target"):
            raise ValueError(f"unit_combat: 'action' must be one of ['bicnet', 'target'], got {self.action!r}")
        if self.angle not in ("clip", "wrap"):
            raise ValueError(f"unit_combat: 'angle' must be one of ['clip', 'wrap'], got {self.angle!r}")
        if self.bot_acquisition not in ("openbw", "sight"):
            raise ValueError(f"unit_combat: 'bot_acquisition' must be one of ['openbw', 'sight'], got {self.bot_acquisition!r}")
        if self.draw_reward is not None and (isinstance(self.draw_reward, bool) or not isinstance(self.draw_reward, (int, float)) or not math.isfinite(self.draw_reward)):
            raise ValueError(f"unit_combat: 'draw_reward' must be a finite number or null, got {self.draw_reward!r}")
        if self.reward_scope not in ("local", "team"):
            raise ValueError(f"unit_combat: 'reward_scope' must be one of ['local', 'team'], got {self.reward_scope!r}")
        if self.reward_counts not in ("deaths", "moving", "hp"):
            raise ValueError(f"unit_combat: 'reward_counts' must be one of ['deaths', 'moving', 'hp'], got {self.reward_counts!r}")
        for k, lo in (("frames_per_step", 1), ("max_steps", 1), ("map_tiles", 16), ("state_grid", 1), ("collision_iters", 0)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"unit_combat: {k!r} must be an integer >= {lo}, got {v!r}")
        for k in ("spawn_gap", "group_noise", "unit_noise", "view_radius", "action_radius", "reward_radius", "win_reward", "nonwin_reward"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"unit_combat: {k!r} must be a finite number, got {v!r}")
        for k in ("spawn_gap", "group_noise", "unit_noise"):
            if getattr(self, k) < 0:
                raise ValueError(f"unit_combat: {k!r} must be >= 0, got {getattr(self, k)}")
        for k in ("view_radius", "action_radius", "reward_radius"):
            if getattr(self, k) <= 0:
                raise ValueError(f"unit_combat: {k!r} must be > 0, got {getattr(self, k)}")
        m = SCENARIOS[self.scenario][3]
        if isinstance(self.curriculum_enemies, bool) or not isinstance(self.curriculum_enemies, int) or not 0 <= self.curriculum_enemies <= m:
            raise ValueError(f"unit_combat: 'curriculum_enemies' must be an integer in [0, {m}] for {self.scenario}, got {self.curriculum_enemies!r}")
        for k in ("curriculum_start", "curriculum_end", "initial_progress"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"unit_combat: {k!r} must lie in [0, 1], got {v!r}")
        if self.curriculum_end < self.curriculum_start:
            raise ValueError(f"unit_combat: 'curriculum_end' ({self.curriculum_end}) must be >= 'curriculum_start' ({self.curriculum_start})")
        gap = self.spawn_gap or SCENARIOS[self.scenario][4]
        if gap * TILE + 600 > self.map_tiles * TILE:
            raise ValueError(f"unit_combat: spawn_gap {gap} tiles does not fit on a {self.map_tiles}-tile map")


def tokens(obs: Tensor, n_units: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split observations ``(..., 7 + 9U)`` into own features ``(..., 7)``, unit tokens ``(..., U, 9)``
    and their mask ``(..., U)`` bool (the ``visible`` feature)."""
    exp = OWN_FEATURES + TOKEN_FEATURES * n_units
    if obs.shape[-1] != exp:
        raise ValueError(f"unit_combat.tokens: observation has {obs.shape[-1]} features, expected {exp} for U={n_units}")
    own = obs[..., :OWN_FEATURES]
    tok = obs[..., OWN_FEATURES:].reshape(*obs.shape[:-1], TOKEN_FEATURES, n_units).transpose(-1, -2)
    return own, tok, tok[..., 0] > 0.5


@register_env("unit_combat", config=UnitCombatConfig)
class UnitCombat(BatchedEnv):
    """StarCraft-style continuous unit combat (m15v16, m10v13z, w15v17) against BW's attack-move AI; group ``agent``."""

    def __init__(self, cfg: UnitCombatConfig = UnitCombatConfig(), num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        dev = self.device
        own_t, n, foe_t, m, gap = SCENARIOS[cfg.scenario]
        self.n, self.m, self.U = n, m, n + m
        self.types: list[UnitType] = [own_t] * n + [foe_t] * m
        self.F = cfg.frames_per_step
        self.map_px = cfg.map_tiles * TILE
        self.gap_px = (cfg.spawn_gap or gap) * TILE
        self.view_px, self.action_px, self.reward_px = cfg.view_radius * TILE, cfg.action_radius * TILE, cfg.reward_radius * TILE
        U = self.U
        self.spec = EnvSpec(
            "unit_combat",
            {"agent": group_spec("agent", n, OWN_FEATURES + TOKEN_FEATURES * U, self._action_space(cfg, m), has_action_mask=cfg.action == "target")},
            max_steps=cfg.max_steps,
            state_shape=(cfg.state_grid**2,),
            info_keys=("win", "draw", "terminal_reward", "own_units", "enemy_units", "own_hp", "enemy_hp"),
        )
        # Per-unit and per-pair constants (the scenario is fixed): (U,) and (U, U) tensors.
        f32 = dict(dtype=torch.float32, device=dev)
        self.max_hp = torch.tensor([t.hp for t in self.types], **f32)
        self.speed = torch.tensor([t.speed for t in self.types], **f32)
        self.radius = torch.tensor([t.radius for t in self.types], **f32)
        self.flying = torch.tensor([t.flying for t in self.types], dtype=torch.bool, device=dev)
        self.sight_px = torch.tensor([t.sight_tiles * TILE for t in self.types], **f32)
        acquire = (lambda t: t.sight_tiles) if cfg.bot_acquisition == "sight" else (lambda t: t.acquire_tiles)
        self.acquire_px = torch.tensor([acquire(t) * TILE for t in self.types], **f32)
        self.type_id = torch.tensor([UNIT_TYPES.index(t) for t in self.types], dtype=torch.long, device=dev)
        self.type_onehot = torch.nn.functional.one_hot(self.type_id, len(UNIT_TYPES)).float()  # (U, 3)
        team = torch.tensor([0] * n + [1] * m, device=dev)
        self.team = team
        self._reward_sign = torch.where(team == 0, -1.0, 1.0)  # (U,): our losses cost, the enemy's pay
        dmg = torch.zeros(U, U, **f32)
        rng = torch.zeros(U, U, **f32)
        cd = torch.ones(U, U, **f32)
        for i, a in enumerate(self.types):  # constants at construction, not in the step
            for j, b in enumerate(self.types):
                w = a.air_weapon if b.flying else a.ground_weapon
                if w is None or team[i] == team[j]:
                    continue
                dmg[i, j] = max(w.damage * _DAMAGE_SCALE[w.kind][b.size] - b.armor, 0.5)
                rng[i, j], cd[i, j] = w.max_range, w.cooldown
        self.pair_damage, self.pair_range, self.pair_cooldown = dmg, rng, cd
        self.can_hit = dmg > 0  # (U, U): i can attack j
        self.radius_sum = self.radius[:, None] + self.radius[None, :]
        # priority of target j for acquirer i: 0 if j can attack i back, else 2 (BW)
        self.priority_px = torch.where(self.can_hit.T, 0.0, 2.0 * 4096.0).to(**f32)
        self._bots_hit_all = bool(self.can_hit[n:, :n].all())  # (shortcuts for the bots' orders)
        self._bots_equal_priority = bool((self.priority_px[n:, :n] == 0).all())
        self.weapon_cooldown = torch.stack([cd[i][self.can_hit[i]].max() if bool(self.can_hit[i].any()) else torch.tensor(1.0, device=dev) for i in range(U)])
        self.collides = ~self.flying[:, None] & ~self.flying[None, :] & ~torch.eye(U, dtype=torch.bool, device=dev)
        ang_u = torch.arange(U, device=dev, dtype=torch.float32) * 2.399963
        self._tie = 0.01 * torch.stack([ang_u.cos(), ang_u.sin()], -1)  # (U, 2): tells stacked units apart
        self._any_collide = bool(self.collides.any())
        self._contact = torch.where(self.collides, self.radius_sum, 0.0)  # (U, U): contact distance of colliding pairs
        self._parking = torch.stack([-1e6 - 1e3 * torch.arange(U, device=dev, dtype=torch.float32), torch.full((U,), -1e6, device=dev)], -1)
        self._unit_const = torch.cat([team.float()[:, None], self.type_onehot], -1).T.contiguous()  # (4, U): enemy flag, type one-hot
        # most shots one unit can fire in a step: at frames 0, c, 2c, ... < F with the shortest jittered cooldown c
        self.max_shots = math.ceil(self.F / max(1.0, float(cd[self.can_hit].min()) - 1)) if bool(self.can_hit.any()) else 1
        self._arange = torch.arange(U, device=dev)
        self._formation = self._formation_offsets()
        self.enemies = self.set_progress(cfg.initial_progress)
        compass = torch.arange(8, device=dev, dtype=torch.float32) * (math.pi / 4)
        self._compass = torch.cat([torch.zeros(1, 2, device=dev), torch.stack([compass.cos(), compass.sin()], -1)])  # (9, 2): hold, 8 moves
        self._move_step = (self.speed[:n] * self.F)[None, :, None]  # (1, N, 1): one step's travel of each agent
        B = num_envs
        self.pos = torch.zeros(B, U, 2, **f32)
        self.hp = torch.zeros(B, U, **f32)
        self.cd = torch.zeros(B, U, **f32)
        self.target = torch.full((B, U), -1, dtype=torch.long, device=dev)
        self.last_attack = torch.full((B, U), -1, dtype=torch.long, device=dev)
        self.retaliating = torch.zeros(B, U - self.n, dtype=torch.bool, device=dev)  # (B, M) bots chasing an attacker
        self.key = torch.zeros(B, dtype=torch.long, device=dev)
        self.counter = torch.zeros(B, dtype=torch.long, device=dev)
        self._pool = OutputPool(dev)  # the observations handed out, recycled once nobody holds them
        self._pair_sets: list[list[Tensor]] | None = None  # two sets of (dx, dy, dist) buffers (_refresh)
        self._pair_flip = 0
        self._work: list[Tensor] | None = None
        self._obs_cache: Tensor | None = None
        self._stale_rows: Tensor | None = None
        self._refresh()

    def enemy_count(self, progress: float) -> int:
        """Living enemies at the start of a battle at training fraction ``progress`` (``curriculum_enemies``)."""
        cfg, m = self.cfg, self.m
        progress = float(progress)
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"unit_combat: 'progress' must lie in [0, 1], got {progress}")
        if cfg.curriculum_enemies == 0:
            return m
        return int(round(cfg.curriculum_enemies + (m - cfg.curriculum_enemies) * ramp(progress, cfg.curriculum_start, cfg.curriculum_end)))

    def set_progress(self, fraction: float) -> int:
        """Set the training fraction (``[0, 1]``): battles that start from now on have
        ``enemy_count(fraction)`` living enemies; returns that count."""
        self.enemies = self.enemy_count(fraction)
        return self.enemies

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _action_space(cfg: UnitCombatConfig, m: int) -> gspaces.Space:
        """BiCNet's ``Box(-1, 1, (3,))`` (the angle unbounded with ``angle="wrap"``) or the ``target`` action's ``Discrete(9 + M)``."""
        if cfg.action == "target":
            return gspaces.Discrete(9 + m)
        angle = np.inf if cfg.angle == "wrap" else 1.0
        return gspaces.Box(np.array([-1.0, -angle, -1.0], dtype=np.float32), np.array([1.0, angle, 1.0], dtype=np.float32), dtype=np.float32)

    def _formation_offsets(self) -> Tensor:
        """``(U, 2)`` offsets of each unit from its team's block centre; the front column faces the enemy."""
        out = torch.zeros(self.U, 2)
        for team, (lo, k, sign) in enumerate(((0, self.n, 1.0), (self.n, self.m, -1.0))):
            r = self.types[lo].radius
            s = 2 * r + 8.0
            rows = min(8, k)
            cols = math.ceil(k / rows)
            for u in range(k):
                c, row = divmod(u, rows)
                in_col = min(rows, k - c * rows)
                out[lo + u, 0] = sign * ((cols - 1) / 2 - c) * s
                out[lo + u, 1] = (row - (in_col - 1) / 2) * s
        return out.to(self.device)

    def _refresh(self, rows: Tensor | None = None) -> None:
        """Recompute what derives from the positions, for our agents' rows: ``_dx``, ``_dy``
        ``(B, N, U)`` (``x_j - x_i``: where unit j is seen from agent i) and ``_dist`` ``(B, N, U)``,
        the centre distances (every pair the step needs has an agent in it: bots only ever target
        our units, and distances are symmetric bit for bit); for the copies ``rows`` only if given
        (then only their cached observations go stale).

        A full refresh writes into the other of two persistent sets of buffers and swaps them in
        (fresh 2 MB tensors at B = 1024 cost a page fault per 4 KiB), so the tensors of the state
        before the step (``dist0`` in ``_step_world``) stay intact until the next full refresh.
        Nothing outside the env holds these."""
        n = self.n
        if rows is None:
            B, U = self.num_envs, self.U
            if self._pair_sets is None or self._pair_sets[0][0].shape[0] != B:
                self._pair_sets = [[torch.empty(B, n, U, device=self.device) for _ in range(3)] for _ in range(2)]
            self._dx, self._dy, self._dist = _pair_geometry(self.pos, n, out=self._pair_sets[self._pair_flip])
            self._pair_flip ^= 1
            self._obs_cache, self._stale_rows = None, None
            return
        dx, dy, dist = _pair_geometry(self.pos.index_select(0, rows), n)
        for v, w in ((self._dx, dx), (self._dy, dy), (self._dist, dist)):
            v.index_copy_(0, rows, w)  # in place: nothing outside the env holds these
        if self._obs_cache is not None:
            self._stale_rows = rows if self._stale_rows is None else torch.cat([self._stale_rows, rows]).unique()

    def _scratch(self, *shape: int) -> list[Tensor]:
        """Two persistent work tensors of ``shape`` (``(B, U, U)``), for temporaries that never leave a method."""
        if self._work is None or tuple(self._work[0].shape) != shape:
            self._work = [torch.empty(shape, device=self.device) for _ in range(2)]
        return self._work

    @property
    def alive_units(self) -> Tensor:
        """``(B, U)`` bool: agents first, then bots."""
        return self.hp > 0

    def edge_distance(self) -> Tensor:
        """``(B, U, U)`` edge-to-edge distances (centre distance minus both radii, >= 0), all pairs."""
        return (_pair_geometry(self.pos, self.U)[2] - self.radius_sum).clamp(min=0.0)

    def decode_actions(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """BiCNet actions ``(B, N, 3)`` -> ``(attack (B, N) bool, target (B, N) global unit index, point (B, N, 2))``.

        The target is the living enemy nearest to the pointed location (whatever ``attack`` says).
        ``target`` actions ``(B, N)`` int64 decode as ``UnitCombatConfig.action`` says."""
        n = self.n
        if self.cfg.action == "target":
            j = (actions - 9).clamp(0, self.m - 1)
            attack = (actions >= 9) & self.alive_units.gather(1, j + n)  # an attack on a dead enemy holds
            point = self.pos[:, :n] + self._move_step * self._compass[actions.clamp(max=8)] * (actions < 9)[..., None]
            return attack, j + n, point
        theta = actions[..., 1] * math.pi
        reach = (actions[..., 2] + 1.0) * (0.5 * self.action_px)
        point = self.pos[:, :n] + reach[..., None] * torch.stack([theta.cos(), theta.sin()], -1)
        ex, ey = self.pos[:, n:, 0], self.pos[:, n:, 1]
        ddx = point[..., 0, None] - ex[:, None, :]
        ddy = point[..., 1, None] - ey[:, None, :]
        d2 = ddx.mul_(ddx).addcmul_(ddy, ddy)  # (B, N, M) squared distance from the pointed location
        d2 = torch.where(self.alive_units[:, None, n:], d2, float("inf"))
        return actions[..., 0] > 0, d2.argmin(-1) + n, point

    def action_mask(self) -> dict[str, Tensor] | None:
        """``{"agent": (B, N, 9 + M) bool}`` for ``action="target"`` (hold always; moves and attacks on
        living enemies for a living agent), else ``None``."""
        if self.cfg.action != "target":
            return None
        n, B = self.n, self.num_envs
        alive = self.alive_units
        me = alive[:, :n, None]
        return {"agent": torch.cat([torch.ones_like(me), me.expand(B, n, 8), me & alive[:, None, n:]], -1)}

    def bot_orders(self, dist: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The built-in AI: ``(attack (B, M) bool, target (B, M) global index, point (B, M, 2))`` (module
        docstring), from the centre distances ``dist`` ``(B, N, U)`` of our agents (``_dist``)."""
        n, B = self.n, self.num_envs
        alive = self.alive_units
        e = (dist[:, :, n:].transpose(1, 2) - self.radius_sum[n:, :n]).clamp_(min=0.0)  # (B, M, N) bot -> our units, edge to edge
        acq = self.acquire_px[n:, None]
        can = e <= acq
        can &= alive[:, None, :n]
        if not self._bots_hit_all:
            can &= self.can_hit[n:, :n]
        cur = self.target[:, n:]
        cur_c = cur.clamp(0, n - 1)
        keep = (cur >= 0) & (cur < n) & can.gather(2, cur_c[..., None]).squeeze(2)
        if self.cfg.bot_retaliate:  # a target taken on being hit is chased while in sight
            seen = self.can_hit[n:, :n] & alive[:, None, :n] & (e <= self.sight_px[n:, None])
            keep = keep | (self.retaliating & (cur >= 0) & (cur < n) & seen.gather(2, cur_c[..., None]).squeeze(2))
        score = torch.where(can, e if self._bots_equal_priority else e + self.priority_px[n:, :n], float("inf"))
        best = score.argmin(-1)
        has = can.any(-1)
        target = torch.where(keep, cur_c, best)
        attack = keep | has
        if self.cfg.bot_idle == "hold":
            return attack, target, self.pos[:, n:]
        w = alive[:, :n].float()
        centroid = (self.pos[:, :n] * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)  # (B, 2)
        return attack, target, centroid[:, None, :].expand(B, self.m, 2)

    def _retaliate(self, fired: Tensor, tgt: Tensor, pos0: Tensor, dist0: Tensor, alive1: Tensor) -> None:
        """``bot_retaliate``: bots hit this step, and their living neighbours within a 96-px box
        (OpenBW ``on_unit_damage``), turn on the attacker (``on_hit_should_change_target``: when
        they have no target, or theirs is out of weapon range and the attacker is in it)."""
        n, m, B = self.n, self.m, self.num_envs
        e = (dist0[:, :, n:].transpose(1, 2) - self.radius_sum[n:, :n]).clamp(min=0.0)  # (B, M, N) bot -> our units
        hit = torch.nn.functional.one_hot((tgt[:, :n] - n).clamp(0, m - 1), m).bool() & (fired[:, :n] & (tgt[:, :n] >= n))[..., None]
        hit = hit.transpose(1, 2)  # (B, M, N): our unit i hit bot j this step
        attacker = torch.where(hit, e, torch.full_like(e, float("inf"))).argmin(-1)  # nearest attacker of each bot
        was_hit = hit.any(-1)  # (B, M)
        d = (pos0[:, n:, None, :] - pos0[:, None, n:, :]).abs().amax(-1)  # (B, M, M) box distance between bots
        near = (d <= 96.0) & was_hit[:, None, :]  # bot k sees bot j hit within its box
        src = torch.where(near, d, torch.full_like(d, float("inf"))).argmin(-1)  # the nearest hit bot (itself if hit)
        helped = near.any(-1) & alive1[:, n:]
        cand = attacker.gather(1, src)  # (B, M) our unit to turn on
        rng = self.pair_range[n:, :n].expand(B, m, n)  # (B, M, N) weapon range of bot -> our unit

        def in_range(j: Tensor) -> Tensor:  # (B, M) our unit index per bot (< 0: none) -> in weapon range
            jc = j.clamp(0, n - 1)[..., None]
            return (j >= 0) & (e.gather(2, jc) <= rng.gather(2, jc)).squeeze(2)

        cur = self.target[:, n:]
        switch = helped & ((cur < 0) | (in_range(cand) & ~in_range(cur)))
        self.target = torch.cat([self.target[:, :n], torch.where(switch, cand, cur)], 1)
        self.retaliating = (self.retaliating | switch) & (self.target[:, n:] >= 0)

    # ------------------------------------------------------------------ hooks
    def _reset_copies(self, mask: Tensor) -> None:
        rows = mask.nonzero().squeeze(1)
        k = int(rows.numel())
        if k == 0:
            return
        cfg, dev, U = self.cfg, self.device, self.U
        centre = torch.tensor([self.map_px / 2, self.map_px / 2], device=dev)
        side = torch.tensor([[-0.5 * self.gap_px, 0.0], [0.5 * self.gap_px, 0.0]], device=dev)  # ours left
        u_group = torch.rand(k, 2, 2, generator=self.rng, device=dev) * 2 - 1
        u_unit = torch.rand(k, U, 2, generator=self.rng, device=dev) * 2 - 1
        group_centre = centre + side[None] + cfg.group_noise * u_group  # (k, 2 teams, 2)
        pos = group_centre[:, self.team] + self._formation[None] + cfg.unit_noise * u_unit
        self.pos = self.pos.index_copy(0, rows, pos.clamp(0.0, self.map_px))
        hp = self.max_hp.expand(k, U).clone()  # (clone: for k = 1 the expand is contiguous, a view of max_hp)
        if self.enemies < self.m:  # the curriculum: the enemies past the first `enemies` start dead
            hp[:, self.n + self.enemies :] = 0.0
        self.hp = self.hp.index_copy(0, rows, hp)
        self.cd = self.cd.index_fill(0, rows, 0.0)
        self.target = self.target.index_fill(0, rows, -1)
        self.retaliating = self.retaliating.index_fill(0, rows, False)
        self.last_attack = self.last_attack.index_fill(0, rows, -1)
        self.key = self.key.index_copy(0, rows, new_keys(k, self.rng, dev))
        self.counter = self.counter.index_fill(0, rows, 0)
        self._refresh(rows)

    def _separate(self, pos: Tensor, alive: Tensor) -> Tensor:
        """Push overlapping living ground units apart; returns the new ``(B, U, 2)`` positions.

        Each of ``collision_iters`` Jacobi rounds moves every living ground unit ``i`` by
        ``½ Σ_j w_ij (x_i − x_j)`` with ``w_ij = max(r_i + r_j − |x_i − x_j|, 0) / |x_i − x_j|`` over
        the other ground units ``j`` (pair overlap along the line of centres, split in halves),
        computed as ``½ (x_i Σ_j w_ij − (W x)_i)`` (``W`` symmetric). Dead units are parked far off the map, one
        apart from another, for the rounds (so no mask is needed: flying and self pairs have
        ``r_i + r_j = 0`` in ``_contact``); units stacked on one point are told apart by a fixed
        offset of 0.01 px per unit (``_tie``) during the rounds, removed afterwards."""
        if self.cfg.collision_iters == 0 or not self._any_collide:
            return pos
        p = torch.where(alive[..., None], pos + self._tie, self._parking)
        dx, dy = self._scratch(pos.shape[0], self.U, self.U)
        ones = torch.ones(pos.shape[0], 1, self.U, device=self.device)
        for _ in range(self.cfg.collision_iters):  # a fixed number of rounds, each over all pairs
            x, y = p[..., 0].contiguous(), p[..., 1].contiguous()
            torch.sub(x[:, :, None], x[:, None, :], out=dx)  # (B, U, U): from j to i
            torch.sub(y[:, :, None], y[:, None, :], out=dy)
            inv_d = dx.mul_(dx).addcmul_(dy, dy).add_(1e-12).rsqrt_()  # 1 / |x_i - x_j| (in dx's buffer)
            w = inv_d.mul_(self._contact).sub_(1.0).clamp_(min=0.0)  # overlap / distance
            # [p^T; 1^T] W = [(W p)^T; (W 1)^T] (W is symmetric; this layout of the product is ~3x faster)
            wp = torch.bmm(torch.cat([p.transpose(1, 2), ones], 1), w).transpose(1, 2)  # (B, U, 3)
            p = p + 0.5 * (p * wp[..., 2:] - wp[..., :2])
        return torch.where(alive[..., None], p - self._tie, pos)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        cfg, n, U, B, F = self.cfg, self.n, self.U, self.num_envs, float(self.F)
        K = self.max_shots
        jitter_u = stream_uniform(self.key, self.counter, U * K).view(B, U, K)
        self.counter = self.counter + 1
        alive0, pos0, dist0 = self.alive_units, self.pos, self._dist
        # 1. orders of both teams, from the state at the start of the step
        a_att, a_tgt, a_pt = self.decode_actions(actions["agent"])
        b_att, b_tgt, b_pt = self.bot_orders(dist0)
        attack = torch.cat([a_att, b_att], 1) & alive0  # (B, U)
        tgt = torch.cat([a_tgt, b_tgt], 1)
        point = torch.cat([a_pt, b_pt], 1)
        tgt_pos = pos0.gather(1, tgt[..., None].expand(B, U, 2))
        goal = torch.where(attack[..., None], tgt_pos, point)
        to_goal = goal - pos0
        goal_d = to_goal.norm(dim=-1)
        # 2. attacks: approach until in range, then fire when the cooldown allows
        ar = self._arange
        # centre distance to the target: agents target bots, bots target agents (dist0 has the agents' rows)
        d_tgt = torch.cat([dist0.gather(2, tgt[:, :n, None]).squeeze(2), dist0[:, :, n:].gather(1, tgt[:, None, n:]).squeeze(1)], 1)
        edge_tgt = (d_tgt - self.radius_sum[ar, tgt]).clamp_(min=0.0)
        gap = edge_tgt - self.pair_range[ar, tgt]
        valid = attack & alive0.gather(1, tgt) & self.can_hit[ar, tgt]
        arrive = torch.ceil(gap.clamp(min=0.0) / self.speed)  # frames to get in range
        t = torch.maximum(self.cd, arrive)  # frame of the first shot
        shots = torch.zeros(B, U, device=self.device)
        base = self.pair_cooldown[ar, tgt]
        for k in range(K):  # at most K shots per step (a small constant): a loop over shots, not units
            fire = valid & (t < F)
            shots = shots + fire.float()
            t = torch.where(fire, t + base + torch.floor(jitter_u[..., k] * 4.0) - 1.0, t)
        fired = shots > 0
        new_cd = torch.where(fired, t - F, self.cd - F).clamp(min=0.0)
        damage = torch.zeros(B, U, device=self.device).scatter_add_(
            1, tgt, shots * self.pair_damage[ar, tgt]
        )
        # 3. moves: attackers close the gap (at most a step's travel), movers head for their point
        travel = self.speed * F
        step_len = torch.where(attack, torch.where(valid, gap.clamp(min=0.0), torch.zeros_like(gap)), goal_d)
        step_len = torch.minimum(step_len, travel) * alive0
        direction = to_goal / goal_d.clamp(min=1e-6)[..., None]
        pos = pos0 + direction * step_len[..., None]
        # 4. deaths, then collisions among the survivors, inside the map
        hp = self.hp - damage
        hp_lost = torch.where(alive0, (self.hp - hp.clamp(min=0.0)) / self.max_hp, torch.zeros_like(hp))  # (B, U) share of max hp
        alive1 = alive0 & (hp > 0)
        self.hp = torch.where(alive0, hp, self.hp)
        pos = self._separate(pos, alive1).clamp(0.0, self.map_px)
        self.pos = torch.where(alive0[..., None], pos, pos0)
        self.cd = torch.where(alive0, new_cd, self.cd)
        self.target = torch.where(valid & alive1, tgt, torch.full_like(tgt, -1))
        self.last_attack = torch.where(fired, tgt, torch.full_like(tgt, -1))
        if cfg.bot_retaliate:
            self._retaliate(fired, tgt, pos0, dist0, alive1)
        self._refresh()
        # 5. outcome and rewards
        own_left, foe_left = alive1[:, :n].any(1), alive1[:, n:].any(1)
        terminated = ~own_left | ~foe_left
        assert self._t is not None
        last = terminated | (self._t + 1 >= cfg.max_steps)
        win = last & own_left & ~foe_left
        draw = last & ~win & ~(~own_left & foe_left)
        nonwin = cfg.nonwin_reward if cfg.draw_reward is None else torch.where(draw, cfg.draw_reward, cfg.nonwin_reward)
        terminal = torch.where(last, torch.where(win, cfg.win_reward, nonwin), 0.0).float()
        if cfg.reward_scope == "team":
            died = hp_lost if cfg.reward_counts == "hp" else (alive0 & ~alive1).float()  # (B, U)
            step_r = (died[:, n:].sum(-1) - died[:, :n].sum(-1))[:, None].expand(-1, n)  # dead agents too
        elif cfg.reward_counts in ("deaths", "hp"):
            # what each unit lost this step, + for enemies and - for ours (0 unless alive at the start),
            # summed over the units within reward_radius of agent i at the start of the step
            lost = hp_lost if cfg.reward_counts == "hp" else (alive0 & ~alive1).float()  # (B, U)
            lost = lost * self._reward_sign
            step_r = torch.where(dist0 <= self.reward_px, lost[:, None, :], 0.0).sum(-1)
        else:
            near0 = (dist0 <= self.reward_px) & alive0[:, None, :]  # (B, N, U)
            near1 = ((self._dist <= self.reward_px) & alive1[:, None, :]).float() - near0.float()
            step_r = near1[..., :n].sum(-1) - near1[..., n:].sum(-1)
        if cfg.reward_scope == "local":
            step_r = step_r * alive0[:, :n]  # agents dead before the step get 0
        r = step_r + terminal[:, None]
        hp_left = self.hp.clamp(min=0.0)
        info = {
            "win": win.float(),
            "draw": draw.float(),
            "terminal_reward": terminal,
            "own_units": alive1[:, :n].sum(1).float(),
            "enemy_units": alive1[:, n:].sum(1).float(),
            "own_hp": hp_left[:, :n].sum(1),
            "enemy_hp": hp_left[:, n:].sum(1),
        }
        return {"agent": r.float()}, terminated, info

    def _observe(self) -> dict[str, Tensor]:
        """Observations (module docstring). Cached between steps: after an auto-reset only the reset
        copies are recomputed (``_stale_rows``), the rest are the ``final_obs`` of the step. The
        returned tensor is the env's cache: read it, do not write into it."""
        if self._obs_cache is None:
            self._obs_cache = self._observe_rows(None)
        elif self._stale_rows is not None:
            rows = self._stale_rows
            fresh = self._pool.empty(*self._obs_cache.shape).copy_(self._obs_cache)  # final_obs stays as returned
            self._obs_cache = fresh.index_copy_(0, rows, self._observe_rows(rows))
        self._stale_rows = None
        return {"agent": self._obs_cache}

    def _observe_rows(self, rows: Tensor | None) -> Tensor:
        """Observations ``(b, N, 7 + 9U)`` of the copies ``rows`` (all copies if ``None``)."""
        n, U = self.n, self.U
        pick = (lambda v: v) if rows is None else (lambda v: v.index_select(0, rows))
        pos, hp, cd, dx, dy, dist = (pick(v) for v in (self.pos, self.hp, self.cd, self._dx, self._dy, self._dist))
        B = pos.shape[0]
        alive = hp > 0
        hpn = hp.clamp(min=0.0) / self.max_hp  # (b, U)
        cdn = cd / self.weapon_cooldown
        # what a visible unit shows besides visibility and position: hp, cooldown, enemy, type (b, 6, U)
        shown = torch.cat([hpn[:, None], cdn[:, None], self._unit_const.expand(B, -1, U)], 1)  # contiguous
        shape = (B, n, OWN_FEATURES + TOKEN_FEATURES * U)
        obs = self._pool.empty(*shape) if rows is None else torch.empty(shape, device=self.device)
        tok = obs[..., OWN_FEATURES:].view(B, n, TOKEN_FEATURES, U)  # feature-major: rows of U are contiguous
        # Few passes over obs (a pass over a strided slice of obs costs several contiguous ones).
        # visible (b, N, U) as 0/1: unit alive and inside the view circle (a dead unit's threshold is
        # -1), not the observer itself, the observer alive; every token feature is 0 where it is 0.
        own_alive = alive[:, :n, None].float()
        vis = torch.le(dist, torch.where(alive, self.view_px, -1.0)[:, None, :]).float()
        vis.diagonal(dim1=1, dim2=2).zero_()
        vis.mul_(own_alive)
        tok[:, :, 0] = vis
        torch.mul(shown[:, None], vis[:, :, None], out=tok[:, :, 3:])
        vis_r = vis.mul_(1.0 / self.view_px)
        torch.mul(dx, vis_r, out=tok[:, :, 1])
        torch.mul(dy, vis_r, out=tok[:, :, 2])
        obs[..., :2] = pos[:, :n] * (own_alive / self.map_px)
        obs[..., 2:4] = torch.stack([hpn[:, :n], cdn[:, :n]], -1) * own_alive
        obs[..., 4:OWN_FEATURES] = self.type_onehot[:n] * own_alive
        return obs

    def _global_state(self) -> Tensor:
        G, n, B = self.cfg.state_grid, self.n, self.num_envs
        cell = (self.pos[:, :n] / (self.map_px / G)).long().clamp(0, G - 1)
        idx = torch.where(self.alive_units[:, :n], cell[..., 1] * G + cell[..., 0], torch.full_like(cell[..., 0], G * G))
        occ = self._pool.empty(B, G * G + 1).zero_().scatter_add_(1, idx, torch.ones(B, n, device=self.device))
        return occ[:, : G * G]

    def _alive(self) -> dict[str, Tensor]:
        return {"agent": self.alive_units[:, : self.n]}

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {"pos": self.pos, "hp": self.hp, "cd": self.cd, "target": self.target, "last_attack": self.last_attack,
                "retaliating": self.retaliating, "key": self.key, "counter": self.counter}

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        if not bool(torch.isfinite(state["pos"]).all()) or bool(((state["pos"] < 0) | (state["pos"] > self.map_px)).any()):
            raise ValueError(f"unit_combat: set_state['pos'] must lie in [0, {self.map_px}] px")
        if bool((state["cd"] < 0).any()):
            raise ValueError("unit_combat: set_state['cd'] must be >= 0 frames")
        for k in ("target", "last_attack"):
            if bool(((state[k] < -1) | (state[k] >= self.U)).any()):
                raise ValueError(f"unit_combat: set_state[{k!r}] must lie in [-1, {self.U}), got {state[k].min().item()}..{state[k].max().item()}")
        state = {"retaliating": torch.zeros_like(self.retaliating), **state}  # (absent from states saved before bot_retaliate)
        for k, v in state.items():
            setattr(self, k, v)
        self._refresh()

    # ------------------------------------------------------------------ rendering
    def render(self, size: int = 512, window_tiles: float = 16.0) -> np.ndarray:
        """Copy 0 in a ``window_tiles``-wide window centred on the living units (1 px per game pixel
        by default): our units blue, bots red (air units drawn as rings), a hit-point bar over each
        living unit, a line from each unit that fired in the last step to its target, a grid line
        every 4 tiles. Returns ``(size, size, 3)`` uint8."""
        img = canvas(size, size, (236, 232, 214))
        scale = size / (window_tiles * TILE)
        live = self.alive_units[0]
        centre = self.pos[0][live].mean(0) if bool(live.any()) else torch.full((2,), self.map_px / 2, device=self.device)
        origin = (centre - window_tiles * TILE / 2).cpu()
        x0 = torch.floor(origin / (4 * TILE)) * (4 * TILE)  # snap to the grid so that lines stay put
        x0 = x0 + torch.where(origin - x0 > 2 * TILE, 4 * TILE, 0.0)
        grid = max(1, int(4 * TILE * scale))
        for g in range(0, size, grid):
            fill_rect(img, g, 0, g + 1, size, (222, 218, 200))
            fill_rect(img, 0, g, size, g + 1, (222, 218, 200))
        pos = ((self.pos[0].cpu() - x0) * scale).numpy()
        hp = self.hp[0].cpu().numpy()
        att = self.last_attack[0].cpu().numpy()
        max_hp = self.max_hp.cpu().numpy()
        rad = (self.radius * scale).cpu().numpy()
        for u in range(self.U):
            if att[u] >= 0:
                j = int(att[u])
                draw_line(img, pos[u, 0], pos[u, 1], pos[j, 0], pos[j, 1], (240, 170, 0) if u < self.n else (200, 90, 200))
        for u in range(self.U):
            if hp[u] <= 0:
                continue
            x, y = pos[u]
            col = (40, 90, 220) if u < self.n else (210, 40, 40)
            r = max(rad[u], 2.5)
            draw_disc(img, x, y, r, col)
            if self.types[u].flying:
                draw_disc(img, x, y, max(r - 3, 1.0), (236, 232, 214), outline=None)
            w = max(int(2 * r), 6)
            bx, by = int(x - w / 2), int(y - r - 5)
            fill_rect(img, bx, by, bx + w, by + 2, (90, 90, 90))
            fill_rect(img, bx, by, bx + int(round(w * hp[u] / max_hp[u])), by + 2, (30, 180, 30))
        return img


# ---------------------------------------------------------------------------------------- baselines
def _pair_geometry(pos: Tensor, rows: int, out: list[Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``dx``, ``dy``, ``dist`` ``(B, rows, U)`` of positions ``(B, U, 2)``: where unit j is seen from
    unit i < rows; written into ``out`` (three such tensors) if given, else fresh."""
    x, y = pos[..., 0].contiguous(), pos[..., 1].contiguous()  # (broadcast ops on unit-stride rows run ~2x faster)
    dx, dy, dist = out if out is not None else (None, None, None)
    dx = torch.sub(x[:, None, :], x[:, :rows, None], out=dx)
    dy = torch.sub(y[:, None, :], y[:, :rows, None], out=dy)
    dist = torch.mul(dx, dx, out=dist).add_(dy * dy).sqrt_()
    return dx, dy, dist


def encode_attack(env: UnitCombat, target: Tensor) -> Tensor:
    """BiCNet actions ``(B, N, 3)`` that attack ``target`` (``(B, N)`` global unit indices): point at the
    target (at most ``action_radius`` away; a farther target is pointed at along its direction).
    With ``action="target"``: the ``(B, N)`` int64 actions that name it."""
    n = env.n
    if env.cfg.action == "target":
        return target - n + 9
    rel = env.pos.gather(1, target[..., None].expand(-1, -1, 2)) - env.pos[:, :n]
    dist = rel.norm(dim=-1)
    angle = torch.atan2(rel[..., 1], rel[..., 0]) / math.pi
    reach = (2.0 * dist / env.action_px - 1.0).clamp(-1.0, 1.0)
    return torch.stack([torch.ones_like(angle), angle.clamp(-1.0, 1.0), reach], -1)


def _closest_enemy(env: UnitCombat, edge: Tensor) -> Tensor:
    n = env.n
    e = torch.where(env.alive_units[:, None, n:] & env.can_hit[:n, n:], edge[:, :n, n:], torch.full_like(edge[:, :n, n:], float("inf")))
    return e.argmin(-1) + n


def attack_closest(env: UnitCombat) -> dict[str, Tensor]:
    """Every agent attacks the closest living enemy (edge distance): ``{"agent": (B, N, 3)}``."""
    return {"agent": encode_attack(env, _closest_enemy(env, env.edge_distance()))}


def _in_range(env: UnitCombat, edge: Tensor) -> Tensor:
    n = env.n
    return (edge[:, :n, n:] <= env.pair_range[:n, n:]) & env.can_hit[:n, n:] & env.alive_units[:, None, n:]  # (B, N, M)


def focus_fire(env: UnitCombat) -> dict[str, Tensor]:
    """Every agent attacks the weakest enemy within its weapon range (fewest hit points, lowest index on
    ties), or the closest enemy if none is in range: ``{"agent": (B, N, 3)}``."""
    n = env.n
    edge = env.edge_distance()
    inr = _in_range(env, edge)
    hp = env.hp[:, None, n:].expand_as(inr)
    weakest = torch.where(inr, hp, torch.full_like(hp, float("inf"))).argmin(-1) + n
    target = torch.where(inr.any(-1), weakest, _closest_enemy(env, edge))
    return {"agent": encode_attack(env, target)}


def focus_fire_no_overkill(env: UnitCombat, rounds: int = 4) -> dict[str, Tensor]:
    """Focus fire without overkill: agents that will fire this step claim the weakest enemy in range
    that still needs shots (``ceil(hp / damage)`` per enemy and step); claims beyond that are refused
    in agent order and retried on the next weakest, for ``rounds`` rounds. Agents left over (all
    enemies in range covered, or not firing this step) attack the closest enemy that still needs
    shots, else the closest. Returns ``{"agent": (B, N, 3)}``."""
    n, m = env.n, env.m
    edge = env.edge_distance()
    inr = _in_range(env, edge)  # (B, N, M)
    alive = env.alive_units
    dmg = env.pair_damage[:n, n:]  # (N, M)
    need = torch.ceil(env.hp[:, n:].clamp(min=0.0) / dmg.max(0).values.clamp(min=1e-6))  # (B, M) shots needed
    need = torch.where(alive[:, n:], need, torch.zeros_like(need))
    ready = alive[:, :n] & (env.cd[:, :n] < env.F)  # fires this step if it stays in range
    assigned = torch.full((env.num_envs, n), -1, dtype=torch.long, device=env.device)
    hp = env.hp[:, None, n:].expand_as(inr)
    for _ in range(rounds):  # a few rounds of claims, each over all agents at once
        open_ = inr & (need[:, None, :] > 0) & (ready & (assigned < 0))[..., None]
        choice = torch.where(open_, hp, torch.full_like(hp, float("inf"))).argmin(-1)  # (B, N)
        claims = torch.nn.functional.one_hot(choice, m).bool() & open_.any(-1, keepdim=True)  # (B, N, M)
        rank = claims.long().cumsum(1)  # 1-based claim order per enemy, in agent order
        ok = claims & (rank <= need[:, None, :])
        got = ok.any(-1)
        assigned = torch.where(got, choice + n, assigned)
        need = need - ok.sum(1)
    e = edge[:, :n, n:]
    open_far = torch.where(alive[:, None, n:] & (need[:, None, :] > 0), e, torch.full_like(e, float("inf")))
    fallback = torch.where(open_far.isfinite().any(-1), open_far.argmin(-1) + n, _closest_enemy(env, edge))
    target = torch.where(assigned >= 0, assigned, fallback)
    return {"agent": encode_attack(env, target)}


SCRIPTED = {"attack_closest": attack_closest, "focus_fire": focus_fire, "focus_fire_no_overkill": focus_fire_no_overkill}
"""name -> scripted policy ``f(env) -> actions``"""
