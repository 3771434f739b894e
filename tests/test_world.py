"""Particle physics against hand-computed cases (MPE2 1.1.1 semantics)."""

import math

import torch

from maestro.envs.particle.world import (
    Entities,
    PhysicsParams,
    contact_forces,
    continuous_action_force,
    discrete_action_force,
    integrate,
    is_collision,
    physics_step,
)

P = PhysicsParams()


def test_discrete_and_continuous_action_forces():
    accel = torch.tensor([5.0, 3.0])
    f = discrete_action_force(torch.tensor([[0, 1], [2, 4]]), accel)
    assert torch.equal(f, torch.tensor([[[0.0, 0.0], [-3.0, 0.0]], [[5.0, 0.0], [0.0, 3.0]]]))
    a = torch.tensor([[[0.3, 0.1, 0.6, 0.2, 0.9], [1.0, 0.0, 0.0, 0.0, 0.0]]])
    f = continuous_action_force(a, accel)
    assert torch.allclose(f, torch.tensor([[[2.5, 3.5], [0.0, 0.0]]]))


def test_contact_force_hand_computed():
    ent = Entities.build([0.15, 0.15, 0.05], 2, collide=[True, True, False])
    pos = torch.tensor([[[0.0, 0.0], [0.2, 0.0], [0.1, 0.0]]])
    f = contact_forces(pos, ent, P)
    pen = math.log1p(math.exp(-(0.2 - 0.3) / 1e-3)) * 1e-3  # softplus, = 0.1 + tiny
    assert torch.allclose(f[0, 0], torch.tensor([-100 * pen, 0.0]))
    assert torch.allclose(f[0, 1], torch.tensor([100 * pen, 0.0]))
    assert torch.equal(f[0, 2], torch.zeros(2))  # a non-collider feels nothing


def test_immovable_obstacle_pushes_but_does_not_move():
    ent = Entities.build([0.05, 0.2], 1, movable=[True, False])
    pos = torch.tensor([[[0.0, 0.0], [0.0, 0.24]]])
    vel = torch.zeros(1, 2, 2)
    new_pos, new_vel = physics_step(pos, vel, torch.zeros(1, 1, 2), ent, P)
    assert new_vel[0, 0, 1] < 0 and torch.equal(new_vel[0, 1], torch.zeros(2))
    assert torch.equal(new_pos[0, 1], pos[0, 1])


def test_integration_order_and_speed_cap():
    ent = Entities.build([0.05], 1, max_speed=[1.0], mass=[2.0])
    pos = torch.tensor([[[0.0, 0.0]]])
    vel = torch.tensor([[[0.5, 0.0]]])
    force = torch.tensor([[[10.0, 0.0]]])
    p, v = integrate(pos, vel, force, ent, P)
    # MPE2 1.1.1: position moves with the old velocity, then v = 0.5*0.75 + 10/2*0.1 = 0.875
    assert torch.allclose(p, torch.tensor([[[0.05, 0.0]]]))
    assert torch.allclose(v, torch.tensor([[[0.875, 0.0]]]))
    p, v = integrate(pos, torch.tensor([[[0.0, 2.0]]]), torch.tensor([[[30.0, 0.0]]]), ent, P)
    assert torch.allclose(v.norm(dim=-1), torch.tensor([[1.0]]))  # capped
    assert torch.allclose(v, torch.tensor([[[1.5, 1.5]]]) / math.sqrt(4.5))


def test_is_collision():
    pa = torch.tensor([[[0.0, 0.0]]])
    pb = torch.tensor([[[0.29, 0.0], [0.31, 0.0]]])
    c = is_collision(pa, torch.tensor([0.15]), pb, torch.tensor([0.15, 0.15]))
    assert c.tolist() == [[[True, False]]]
