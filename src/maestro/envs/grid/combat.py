"""Combat (Sukhbaatar et al. 2016, CommNet, arXiv 1605.07736, §5.2.2), the second discrete task of
MS-MARL (Kong et al. 2017, §4.1 and Table 1).

Two teams of units fight on a ``dim × dim`` grid (15 × 15, 5 vs 5). The learner controls team
``agent`` (``N = n_agents``); the other team (``M = n_enemies``) is the scripted bot of CommNet's
``CombatAgent.lua`` and is part of the env. Units have ``hp`` hit points (3); an attack removes
``attack_power`` (1) hit points from a living enemy within Chebyshev distance ``attack_range`` (1,
the 3 × 3 square around the attacker); after an attack a unit waits ``cooldown`` (1) steps before
it can attack again; a unit with 0 hit points is dead (``alive`` False) and stays dead. An episode
ends (``terminated``) when a team is dead, or is truncated after ``max_steps`` (40) as a draw.

Spawn: each team gets a uniformly random centre; its units take distinct random cells of the
square of half-width ``dispersion`` (5, CommNet's code; the paper's text says a 5 × 5 square,
i.e. ``dispersion=2``) around it, clipped to the grid, never a cell of the other team.

Actions of an ``agent`` (``Discrete(5 + M)``): 0 no-op, 1 up (row − 1), 2 down, 3 left (col − 1),
4 right, ``5 + j`` attack enemy ``j``. ``action_mask()`` ``(B, N, 5 + M)`` marks the legal ones:
no-op always; a move if it stays on the grid and its cell holds no living unit; an attack on ``j``
if the agent is alive, its cooldown is 0, enemy ``j`` is alive and within range. The mask is
advisory: an illegal action is a no-op (an attack on a dead or out-of-range enemy, or during the
cooldown, does nothing and does not start a cooldown; a move off the grid or into an occupied or
contested cell stays put). Dead agents' actions are ignored.

The bot (CommNet's ``default_choose_action``, as the paper describes it): attack the nearest living
enemy if it is within range and the cooldown is 0; otherwise approach the nearest *visible* enemy,
stepping along the column axis with probability ``|Δcol| / d∞`` and along the row axis otherwise;
with no visible enemy stay (``bot_idle="stay"``, CommNet's ``fumble``) or take a random step
(``"wander"``). An enemy is visible to the bots if it is within ``visibility`` of *any* living bot
(``bot_shared_vision``, CommNet's ``fog = 1``) or else of the bot itself.

Resolution of one step (all units at once, from the state at the start of the step):
attacks first (damage is summed, so two units can kill each other in the same step), then deaths,
then the moves of the survivors: a move succeeds if its target cell is on the grid, holds no
living unit, and no other mover with a higher random initiative targets it.

Rewards (``reward="commnet"``, the default; CommNet's ``combat_game.lua`` costs): 0 per step; at
the last step of an episode every agent alive at the start of that step receives
``-enemy_hp_penalty · (enemy hit points left) - loss_penalty · [lost] - draw_penalty · [draw]``
(0.1, 1, 1; a draw is a timeout or both teams dying together). ``reward="ms_marl"`` uses MS-MARL's
equations (2)-(3): per step ``Δ(own units alive within reward_radius) − Δ(enemies alive within
reward_radius)`` around the agent (Euclidean radius 7, the agent counted among its own; 0 for
units dead before the step), plus ``win_reward`` (1) for a win or ``nonwin_reward`` (−0.2)
otherwise at the last step. The terminal reward is the team's: every unit receives it, dead or
alive (CommNet; MS-MARL's Algorithm 1 adds it to every ``R_i``); it is also reported in
``info["terminal_reward"]``.

``info`` (``(B,)`` float32, read where ``done``): ``win``, ``draw``, ``terminal_reward``,
``enemy_hp`` (enemy hit points left), ``agents_alive``, ``enemies_alive``.

Observation of agent ``i`` (``(B, N, N + 4 + 5M + 4N)`` float32; zeros for dead agents), in order:
``id`` one-hot (N); own ``row/(dim−1)``, ``col/(dim−1)``, ``hp/hp``, ``cooldown/max(cooldown,1)``;
per enemy ``j``: ``visible``, ``Δrow/V``, ``Δcol/V``, ``hp/hp`` (zeros unless visible), and
``attackable`` (= the mask bit of attacking ``j``); per ally ``k`` (itself included):
``visible``, ``Δrow/V``, ``Δcol/V``, ``hp/hp``. Visible = alive and within Chebyshev distance
``visibility`` (1: the 3 × 3 view of CommNet) of agent ``i``; ``V = max(visibility, 1)``. CommNet
feeds one-hot {id, team, location, hp, cooldown} words of every unit in the view; this fixed-size
layout carries the same facts and names each enemy by its attack index.

Global state (``(B, 3·dim²)`` float32, channel-major ``(3, dim, dim)`` flattened): own-team
occupancy (1 per living agent), own hit points ``hp/hp`` at each agent's cell, and the cells of
enemies visible to the team (within ``visibility`` of any living agent) — MS-MARL's master input
is "the occupancy map of controlled agents"; the state holds nothing the agents cannot see.

Deliberate departures from CommNet: simultaneous resolution instead of a random sequential turn
order; spawn without overlapping units (CommNet clamps offsets and may stack units); illegal
attacks do not consume the cooldown (CommNet's ``shoot`` sets it before the range check); the
bot approaches the nearest visible enemy (CommNet: the nearest enemy, doing nothing if that one is
invisible). Per-step randomness (bot axis choice, initiative) comes from per-copy hash streams
(``common.py``); the spawn draws from the env's generator, only for the copies being reset.

Baseline: ``attack_nearest(env)`` plays the bot's rule for the controlled team (``seek=True``: a
privileged variant that also walks toward enemies nobody sees); ``benchmarks/grid_stats.py``
reports its win rate against the bot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, group_spec
from maestro.envs.grid.common import chebyshev, new_keys, stream_uniform
from maestro.envs.render import canvas, draw_disc, draw_line, fill_rect
from maestro.registry import register_env
from maestro.spec import EnvSpec

NOOP, UP, DOWN, LEFT, RIGHT, ATTACK = 0, 1, 2, 3, 4, 5
_BIG = 1 << 20


@dataclass(frozen=True)
class CombatConfig:
    """Combat settings (defaults: CommNet's ``combat_game.lua`` and ``marine_config.lua``)."""

    n_agents: int = 5
    """units of the controlled team (group ``agent``)"""
    n_enemies: int = 5
    """units of the scripted bot team"""
    dim: int = 15
    """grid side length"""
    hp: int = 3
    """hit points of every unit at spawn"""
    attack_power: int = 1
    """hit points an attack removes"""
    attack_range: int = 1
    """Chebyshev firing range (1: the 3x3 square around the unit)"""
    cooldown: int = 1
    """steps a unit must wait after an attack before attacking again"""
    visibility: int = 1
    """Chebyshev view radius of every unit (CommNet's --visibility, default 1)"""
    bot_shared_vision: bool = True
    """bots see an enemy that any living bot sees (CommNet fog=1); else only their own view"""
    bot_idle: Literal["stay", "wander"] = "stay"
    """what a bot does with no enemy visible: stay (CommNet) or take a random step"""
    dispersion: int = 5
    """half-width of the spawn square around each team's random centre (CommNet code: 5)"""
    max_steps: int = 40
    """episode length; reaching it is a draw"""
    reward: Literal["commnet", "ms_marl"] = "commnet"
    """commnet: terminal reward only (CommNet); ms_marl: MS-MARL eq. (2) per step + eq. (3) at the end"""
    enemy_hp_penalty: float = 0.1
    """commnet: terminal reward -enemy_hp_penalty per enemy hit point left"""
    loss_penalty: float = 1.0
    """commnet: terminal reward -loss_penalty when the team loses"""
    draw_penalty: float = 1.0
    """commnet: terminal reward -draw_penalty on a draw (timeout or mutual destruction)"""
    win_reward: float = 1.0
    """ms_marl: terminal reward of a won battle"""
    nonwin_reward: float = -0.2
    """ms_marl: terminal reward of a lost or drawn battle"""
    reward_radius: float = 7.0
    """ms_marl: Euclidean radius of the neighbourhood whose unit counts define the step reward"""

    def __post_init__(self) -> None:
        for k, lo in (("n_agents", 1), ("n_enemies", 1), ("dim", 2), ("hp", 1), ("attack_power", 1),
                      ("attack_range", 0), ("cooldown", 0), ("visibility", 0), ("dispersion", 0), ("max_steps", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"combat: {k!r} must be an integer >= {lo}, got {v!r}")
        if self.bot_idle not in ("stay", "wander"):
            raise ValueError(f"combat: 'bot_idle' must be one of ['stay', 'wander'], got {self.bot_idle!r}")
        if self.reward not in ("commnet", "ms_marl"):
            raise ValueError(f"combat: 'reward' must be one of ['commnet', 'ms_marl'], got {self.reward!r}")
        side = min(self.dim, self.dispersion + 1)
        if side * side < self.n_agents + self.n_enemies:
            raise ValueError(
                f"combat: 'dispersion'={self.dispersion} on dim={self.dim} leaves {side * side} cells in a corner spawn "
                f"square, fewer than the {self.n_agents + self.n_enemies} units (n_agents + n_enemies)"
            )
        for k in ("enemy_hp_penalty", "loss_penalty", "draw_penalty", "win_reward", "nonwin_reward", "reward_radius"):
            if not np.isfinite(getattr(self, k)):
                raise ValueError(f"combat: {k!r} must be finite, got {getattr(self, k)}")


_DELTA = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=torch.long)


def nearest_enemy_actions(
    my_pos: Tensor, my_alive: Tensor, my_cd: Tensor, foe_pos: Tensor, foe_alive: Tensor, foe_visible: Tensor,
    attack_range: int, u_axis: Tensor, idle: Tensor | None = None, dist: Tensor | None = None,
) -> Tensor:
    """CommNet's bot rule for one team, batched: ``(B, P)`` actions in the ``5 + Q`` encoding.

    Args:
        my_pos: ``(B, P, 2)`` int64 (row, col); ``my_alive``, ``my_cd``: ``(B, P)``.
        foe_pos: ``(B, Q, 2)``; ``foe_alive``: ``(B, Q)`` bool.
        foe_visible: ``(B, P, Q)`` bool: which enemies each unit may approach.
        attack_range: Chebyshev range.
        u_axis: ``(B, P)`` uniforms: step along the column axis iff ``u < |Δcol| / d∞``.
        idle: ``(B, P)`` actions with nothing visible (default no-op).
        dist: ``(B, P, Q)`` Chebyshev distances if already known.
    """
    if dist is None:
        dist = chebyshev(my_pos, foe_pos)  # (B, P, Q)
    d_alive = torch.where(foe_alive[:, None, :], dist, torch.full_like(dist, _BIG))
    dnear, nearest = d_alive.amin(-1), d_alive.argmin(-1)  # (amin/argmin: min(dim) is slow on small tensors)
    attack = my_alive & (dnear <= attack_range) & (my_cd == 0)
    d_vis = torch.where(foe_alive[:, None, :] & foe_visible, dist, torch.full_like(dist, _BIG))
    dvis, tgt = d_vis.amin(-1), d_vis.argmin(-1)
    seen = my_alive & (dvis < _BIG)
    rel = foe_pos.gather(1, tgt[..., None].expand(-1, -1, 2)) - my_pos  # (B, P, 2)
    horizontal = u_axis < rel[..., 1].abs().float() / dvis.clamp(min=1).float()
    move = torch.where(
        horizontal,
        torch.where(rel[..., 1] > 0, RIGHT, LEFT),
        torch.where(rel[..., 0] > 0, DOWN, UP),
    )
    rest = idle if idle is not None else torch.zeros_like(move)
    out = torch.where(attack, ATTACK + nearest, torch.where(seen, move, rest))
    return torch.where(my_alive, out, torch.zeros_like(out)).long()


@register_env("combat", config=CombatConfig)
class Combat(BatchedEnv):
    """CommNet's combat game: N agents vs M scripted bots on a grid; group ``agent``, masked attacks."""

    def __init__(self, cfg: CombatConfig = CombatConfig(), num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        dev, B = self.device, num_envs
        n, m, D = cfg.n_agents, cfg.n_enemies, cfg.dim
        self.n, self.m, self.U = n, m, n + m
        self.n_actions = ATTACK + m
        obs_dim = n + 4 + 5 * m + 4 * n
        self.spec = EnvSpec(
            "combat",
            {"agent": group_spec("agent", n, obs_dim, gspaces.Discrete(self.n_actions), has_action_mask=True)},
            max_steps=cfg.max_steps,
            state_shape=(3 * D * D,),
            info_keys=("win", "draw", "terminal_reward", "enemy_hp", "agents_alive", "enemies_alive"),
        )
        rr, cc = torch.meshgrid(torch.arange(D, device=dev), torch.arange(D, device=dev), indexing="ij")
        self._cells = torch.stack([rr.reshape(-1), cc.reshape(-1)], -1)  # (D², 2)
        self._delta = _DELTA.to(dev)
        self._eye = torch.eye(n, device=dev)
        self._team = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(m, dtype=torch.long)]).to(dev)
        self.pos = torch.zeros(B, self.U, 2, dtype=torch.long, device=dev)
        self.hp = torch.zeros(B, self.U, dtype=torch.long, device=dev)
        self.cd = torch.zeros(B, self.U, dtype=torch.long, device=dev)
        self.last_attack = torch.full((B, self.U), -1, dtype=torch.long, device=dev)
        self.key = torch.zeros(B, dtype=torch.long, device=dev)
        self.counter = torch.zeros(B, dtype=torch.long, device=dev)
        self._refresh()

    # ------------------------------------------------------------------ helpers
    def _refresh(self) -> None:
        """Recompute what is derived from the state: ``_dist (B, U, U)`` pairwise Chebyshev distances."""
        self._dist = chebyshev(self.pos, self.pos)

    @property
    def alive_units(self) -> Tensor:
        """``(B, N + M)`` bool: agents first, then bots."""
        return self.hp > 0

    def _flat(self, pos: Tensor) -> Tensor:
        return pos[..., 0] * self.cfg.dim + pos[..., 1]

    def _occupancy(self, alive: Tensor) -> Tensor:
        """``(B, dim² + 1)`` count of living units per cell (last column: sink for the dead)."""
        D2 = self.cfg.dim**2
        idx = torch.where(alive, self._flat(self.pos), torch.full_like(self.hp, D2))
        return torch.zeros(self.num_envs, D2 + 1, dtype=torch.long, device=self.device).scatter_add_(1, idx, torch.ones_like(idx))

    def _visible_to_team(self, team: int) -> Tensor:
        """``(B, N + M)`` bool: units within ``visibility`` of a living unit of ``team`` (0 agents, 1 bots)."""
        sl = slice(0, self.n) if team == 0 else slice(self.n, self.U)
        return ((self._dist[:, sl] <= self.cfg.visibility) & self.alive_units[:, sl, None]).any(1)

    def bot_actions(self, u_axis: Tensor, u_idle: Tensor) -> Tensor:
        """``(B, M)`` actions of the bot team (``5 + N`` encoding) from the current state."""
        cfg, n = self.cfg, self.n
        alive = self.alive_units
        if cfg.bot_shared_vision:
            vis = self._visible_to_team(1)[:, None, :n].expand(-1, self.m, -1)
        else:
            vis = self._dist[:, n:, :n] <= cfg.visibility
        idle = (1 + (u_idle * 4).long().clamp(max=3)) if cfg.bot_idle == "wander" else None
        return nearest_enemy_actions(
            self.pos[:, n:], alive[:, n:], self.cd[:, n:], self.pos[:, :n], alive[:, :n], vis, cfg.attack_range, u_axis, idle,
            dist=self._dist[:, n:, :n],
        )

    def action_mask(self) -> dict[str, Tensor]:
        """``{"agent": (B, N, 5 + M) bool}``: legal actions (see the module docstring)."""
        cfg, n, D = self.cfg, self.n, self.cfg.dim
        alive = self.alive_units
        me = self.pos[:, :n]
        tgt = me[:, :, None, :] + self._delta[1:]  # (B, N, 4, 2)
        inb = ((tgt >= 0) & (tgt < D)).all(-1)
        occ = self._occupancy(alive)
        tflat = torch.where(inb, self._flat(tgt), torch.full_like(inb, D * D, dtype=torch.long))
        free = occ.gather(1, tflat.view(self.num_envs, -1)).view_as(inb) == 0
        moves = inb & free & alive[:, :n, None]
        dist = self._dist[:, :n, n:]
        attack = alive[:, :n, None] & (self.cd[:, :n, None] == 0) & alive[:, None, n:] & (dist <= cfg.attack_range)
        noop = torch.ones_like(alive[:, :n, None])
        return {"agent": torch.cat([noop, moves, attack], -1)}

    # ------------------------------------------------------------------ hooks
    def _reset_copies(self, mask: Tensor) -> None:
        cfg, dev = self.cfg, self.device
        D, d = cfg.dim, cfg.dispersion
        rows = mask.nonzero().squeeze(1)  # draws only for the copies being reset
        B = int(rows.numel())
        if B == 0:
            return
        centres = torch.randint(0, D, (B, 2, 2), generator=self.rng, device=dev)
        scores = torch.rand(B, 2, D * D, generator=self.rng, device=dev)
        taken = torch.zeros(B, D * D, dtype=torch.bool, device=dev)
        chosen = []
        for t, k in ((0, self.n), (1, self.m)):  # two teams: a fixed loop of two tensor ops
            inside = (self._cells[None] - centres[:, t, None, :]).abs().amax(-1) <= d
            s = torch.where(inside & ~taken, scores[:, t], torch.full_like(scores[:, t], -1.0))
            idx = s.topk(k, dim=1).indices  # (B, k)
            taken = taken.scatter(1, idx, True)
            chosen.append(idx)
        self.pos = self.pos.index_copy(0, rows, self._cells[torch.cat(chosen, 1)])
        self.hp = self.hp.index_fill(0, rows, cfg.hp)
        self.cd = self.cd.index_fill(0, rows, 0)
        self.last_attack = self.last_attack.index_fill(0, rows, -1)
        self.key = self.key.index_copy(0, rows, new_keys(B, self.rng, dev))
        self.counter = self.counter.index_fill(0, rows, 0)
        self._refresh()

    def _neighbours(self, pos: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, N)`` living own units / enemies within ``reward_radius`` (Euclidean) of each agent."""
        diff = (pos[:, : self.n, None, :] - pos[:, None, :, :]).float()
        near = (diff.pow(2).sum(-1) <= self.cfg.reward_radius**2) & alive[:, None, :]
        return near[..., : self.n].sum(-1), near[..., self.n :].sum(-1)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        cfg, n, m, U, B, D = self.cfg, self.n, self.m, self.U, self.num_envs, self.cfg.dim
        dev = self.device
        u = stream_uniform(self.key, self.counter, 2 * m + U)
        self.counter = self.counter + 1
        alive0, pos0 = self.alive_units, self.pos
        # decisions of both teams, from the state at the start of the step
        act = torch.cat([actions["agent"], self.bot_actions(u[:, :m], u[:, m : 2 * m])], 1)  # (B, U)
        act = torch.where(alive0, act, torch.zeros_like(act))
        is_attack = act >= ATTACK
        offset = torch.where(self._team == 0, n, 0)  # agents target bots (n + j), bots target agents (j)
        target = torch.where(is_attack, act - ATTACK + offset, torch.zeros_like(act))
        in_range = self._dist.gather(2, target[..., None]).squeeze(2) <= cfg.attack_range
        valid = is_attack & alive0 & (self.cd == 0) & alive0.gather(1, target) & in_range
        dmg = torch.zeros(B, U, dtype=torch.long, device=dev).scatter_add_(1, target, valid.long() * cfg.attack_power)
        self.hp = (self.hp - dmg).clamp(min=0)
        self.cd = torch.where(valid, torch.full_like(self.cd, cfg.cooldown), (self.cd - 1).clamp(min=0))
        self.last_attack = torch.where(valid, target, torch.full_like(target, -1))
        alive1 = self.alive_units
        # moves of the survivors
        is_move = (act >= UP) & (act <= RIGHT) & alive1
        dest = pos0 + self._delta[torch.where(is_move, act, torch.zeros_like(act))]
        inb = ((dest >= 0) & (dest < D)).all(-1)
        dflat = torch.where(inb, self._flat(dest), torch.full_like(act, D * D))
        free = self._occupancy(alive1).gather(1, dflat) == 0
        cand = is_move & inb & free
        prio = u[:, 2 * m :]
        idx = torch.arange(U, device=dev)
        better = (prio[:, None, :] < prio[:, :, None]) | ((prio[:, None, :] == prio[:, :, None]) & (idx[None, None, :] < idx[None, :, None]))
        beaten = ((dflat[:, :, None] == dflat[:, None, :]) & cand[:, None, :] & better).any(-1)
        moved = cand & ~beaten
        self.pos = torch.where(moved[..., None], dest, pos0)
        self._refresh()
        # outcome
        own_left, foe_left = alive1[:, :n].any(1), alive1[:, n:].any(1)
        terminated = ~own_left | ~foe_left
        assert self._t is not None
        last = terminated | (self._t + 1 >= cfg.max_steps)
        win = last & own_left & ~foe_left
        lose = last & ~own_left & foe_left
        draw = last & ~win & ~lose
        enemy_hp = self.hp[:, n:].sum(1).float()
        if cfg.reward == "commnet":
            terminal = -cfg.enemy_hp_penalty * enemy_hp - cfg.loss_penalty * lose.float() - cfg.draw_penalty * draw.float()
            terminal = torch.where(last, terminal, torch.zeros_like(terminal)) + 0.0  # no -0.0
            r = terminal[:, None].expand(B, n)
        else:
            terminal = torch.where(last, torch.where(win, cfg.win_reward, cfg.nonwin_reward), 0.0).float()
            own0, foe0 = self._neighbours(pos0, alive0)
            own1, foe1 = self._neighbours(self.pos, alive1)
            # eq. (2) with the agent's own position at t-1 and t (its count includes itself)
            step_r = ((own1 - own0) - (foe1 - foe0)).float() * alive0[:, :n]
            r = step_r + terminal[:, None]
        info = {
            "win": win.float(),
            "draw": draw.float(),
            "terminal_reward": terminal.float(),
            "enemy_hp": enemy_hp,
            "agents_alive": alive1[:, :n].sum(1).float(),
            "enemies_alive": alive1[:, n:].sum(1).float(),
        }
        return {"agent": r.float().contiguous()}, terminated, info

    def _observe(self) -> dict[str, Tensor]:
        cfg, n, m, B, D = self.cfg, self.n, self.m, self.num_envs, self.cfg.dim
        alive = self.alive_units
        me = self.pos[:, :n]
        V = float(max(cfg.visibility, 1))
        rel = (self.pos[:, None, :, :] - me[:, :, None, :]).float()  # (B, N, U, 2)
        vis = (self._dist[:, :n] <= cfg.visibility) & alive[:, None, :]  # (B, N, U)
        hpn = (self.hp.float() / cfg.hp)[:, None, :].expand(-1, n, -1)
        feats = torch.cat([vis[..., None].float(), rel / V, hpn[..., None]], -1) * vis[..., None]  # (B, N, U, 4)
        att = self.action_mask()["agent"][..., ATTACK:].float()  # (B, N, M)
        enemies = torch.cat([feats[:, :, n:], att[..., None]], -1).reshape(B, n, 5 * m)
        allies = feats[:, :, :n].reshape(B, n, 4 * n)
        own = torch.stack(
            [me[..., 0].float() / max(D - 1, 1), me[..., 1].float() / max(D - 1, 1),
             self.hp[:, :n].float() / cfg.hp, self.cd[:, :n].float() / max(cfg.cooldown, 1)], -1
        )
        obs = torch.cat([self._eye.expand(B, n, n), own, enemies, allies], -1)
        return {"agent": obs * alive[:, :n, None]}

    def _global_state(self) -> Tensor:
        cfg, n, B, D2 = self.cfg, self.n, self.num_envs, self.cfg.dim**2
        alive = self.alive_units
        own_idx = torch.where(alive[:, :n], self._flat(self.pos[:, :n]), torch.full_like(self.hp[:, :n], D2))
        occ = torch.zeros(B, D2 + 1, device=self.device).scatter_add_(1, own_idx, torch.ones(B, n, device=self.device))
        hp = torch.zeros(B, D2 + 1, device=self.device).scatter_add_(1, own_idx, self.hp[:, :n].float() / cfg.hp)
        seen = self._visible_to_team(0)[:, n:] & alive[:, n:]
        foe_idx = torch.where(seen, self._flat(self.pos[:, n:]), torch.full_like(self.hp[:, n:], D2))
        foe = torch.zeros(B, D2 + 1, device=self.device).scatter_add_(1, foe_idx, torch.ones(B, self.m, device=self.device))
        return torch.cat([occ[:, :D2], hp[:, :D2], foe[:, :D2]], 1)

    def _alive(self) -> dict[str, Tensor]:
        return {"agent": self.alive_units[:, : self.n].clone()}

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {"pos": self.pos, "hp": self.hp, "cd": self.cd, "last_attack": self.last_attack, "key": self.key, "counter": self.counter}

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        D = self.cfg.dim
        if bool(((state["pos"] < 0) | (state["pos"] >= D)).any()):
            raise ValueError(f"combat: set_state['pos'] must lie in [0, {D}), got {state['pos'].min().item()}..{state['pos'].max().item()}")
        if bool((state["hp"] < 0).any()) or bool((state["cd"] < 0).any()):
            raise ValueError("combat: set_state['hp'] and ['cd'] must be >= 0")
        for k, v in state.items():
            setattr(self, k, v)
        self._refresh()

    # ------------------------------------------------------------------ rendering
    def render(self, cell_px: int = 24) -> np.ndarray:
        """Copy 0: agents blue, bots red, a hit-point bar under each living unit, a dark dot on units
        cooling down, and a line from each unit that attacked in the last step to its target."""
        cfg, D, n = self.cfg, self.cfg.dim, self.n
        img = canvas(D * cell_px, D * cell_px, (245, 245, 235))
        for i in range(D + 1):
            fill_rect(img, 0, i * cell_px, D * cell_px, i * cell_px + 1, (210, 210, 200))
            fill_rect(img, i * cell_px, 0, i * cell_px + 1, D * cell_px, (210, 210, 200))
        pos = self.pos[0].cpu().numpy()
        hp = self.hp[0].cpu().numpy()
        cd = self.cd[0].cpu().numpy()
        att = self.last_attack[0].cpu().numpy()
        half = cell_px / 2

        def centre(u: int) -> tuple[float, float]:
            return pos[u, 1] * cell_px + half, pos[u, 0] * cell_px + half

        for u in range(self.U):
            if att[u] >= 0:
                (x0, y0), (x1, y1) = centre(u), centre(int(att[u]))
                draw_line(img, x0, y0, x1, y1, (230, 160, 0))
        for u in range(self.U):
            if hp[u] <= 0:
                continue
            x, y = centre(u)
            draw_disc(img, x, y, cell_px * 0.33, (40, 90, 220) if u < n else (210, 40, 40))
            if cd[u] > 0:
                draw_disc(img, x, y, 2.0, (20, 20, 20), outline=None)
            w = int((cell_px - 6) * hp[u] / cfg.hp)
            x0, y0 = int(pos[u, 1] * cell_px + 3), int(pos[u, 0] * cell_px + cell_px - 4)
            fill_rect(img, x0, y0, x0 + cell_px - 6, y0 + 2, (200, 200, 200))
            fill_rect(img, x0, y0, x0 + w, y0 + 2, (30, 170, 30))
        return img


# ---------------------------------------------------------------------------------------- baselines
def attack_nearest(env: Combat, generator: torch.Generator | None = None, seek: bool = False) -> dict[str, Tensor]:
    """The bot's rule played by the controlled team (shared team vision): attack the nearest enemy
    in range when the cooldown allows, else step toward the nearest visible enemy, else stay.

    With ``generator`` the axis of a step is drawn as the bot draws it; without, a unit steps
    along the axis of the larger gap (the column axis on ties). ``seek=True`` is a privileged
    variant that steps toward the nearest living enemy even when no agent sees it (it reads the
    simulator state, not the observations). Returns ``{"agent": (B, N)}``.
    """
    n, B = env.n, env.num_envs
    alive = env.alive_units
    if generator is None:
        u = torch.full((B, n), 1.0 - 1e-6, device=env.device)  # column axis iff |Δcol| >= |Δrow|
    else:
        u = torch.rand(B, n, generator=generator, device=env.device)
    if seek:
        vis = torch.ones(B, n, env.m, dtype=torch.bool, device=env.device)
    else:
        vis = env._visible_to_team(0)[:, None, n:].expand(-1, n, -1)
    a = nearest_enemy_actions(
        env.pos[:, :n], alive[:, :n], env.cd[:, :n], env.pos[:, n:], alive[:, n:], vis, env.cfg.attack_range, u,
        dist=env._dist[:, :n, n:],
    )
    return {"agent": a}
