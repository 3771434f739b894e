"""The communication models of maestro.nn (Independent, CommNet, MS-MARL, MS-MARL + GCM, BiCNet):
shapes, where gradients flow (and where they must not), GCM with the slave gate shut equals regular
MS-MARL, dead agents take no part in communication, BiCNet over alive agents only, helpers vs naive loops."""

import pytest
import torch

from maestro.algos.reinforce import Config, build_model, model_arch
from maestro.nn.bicnet import over_agents, make_birnn
from maestro.nn.master_slave import MasterSlaveNet
from maestro.nn.recurrent import masked_mean, mean_of_others, reset_hidden

B, N, D, A, S = 3, 4, 6, 5, 7
MODELS = ["independent", "commnet", "bicnet", "ms_marl", "ms_marl_gcm"]


def make(name, seed=0, **cfg):
    torch.manual_seed(seed)
    return build_model(name, D, N, A, S, model_arch(name, Config(**cfg)))


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, N, D, generator=g)
    state = torch.randn(B, S, generator=g)
    alive = torch.ones(B, N, dtype=torch.bool)
    return obs, state, alive


def unroll(net, obs_seq, state, alive, hidden=None):
    """Run ``net`` over a list of observations; returns the list of ModelOut."""
    hidden = net.init_hidden(obs_seq[0].shape[0], "cpu") if hidden is None else hidden
    outs = []
    for o in obs_seq:
        out = net(o, state, alive, hidden)
        outs.append(out)
        hidden = out.hidden
    return outs


@pytest.mark.parametrize("name", MODELS)
def test_shapes(name):
    net = make(name)
    obs, state, alive = inputs()
    out = net(obs, state, alive, net.init_hidden(B, "cpu"))
    assert out.params.shape == (B, N, A) and out.value.shape == (B, N)
    for k, v in out.hidden.items():
        assert v.shape[0] == B, k
    with pytest.raises(ValueError, match=r"expected \(B, 4, 6\)"):
        net(torch.zeros(B, N, D + 1), state, alive, net.init_hidden(B, "cpu"))


def test_mean_of_others_and_masked_mean_match_a_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, generator=g)
    alive = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    got = mean_of_others(x, alive)
    for b in range(2):
        for j in range(5):
            others = [x[b, k] for k in range(5) if k != j and alive[b, k]]
            want = torch.stack(others).mean(0) if others else torch.zeros(3)
            torch.testing.assert_close(got[b, j], want)
        live = [x[b, k] for k in range(5) if alive[b, k]]
        torch.testing.assert_close(masked_mean(x, alive)[b], torch.stack(live).mean(0))


def test_reset_hidden_per_copy_and_per_agent():
    h = {"slave_h": torch.ones(2, 3, 4), "master_h": torch.ones(2, 4)}
    r = reset_hidden(h, torch.tensor([True, False]))
    assert r["slave_h"][1].abs().sum() == 0 and r["master_h"][1].abs().sum() == 0 and r["master_h"][0].sum() == 4
    r = reset_hidden(h, torch.tensor([[True, False, True], [True, True, True]]))
    assert r["slave_h"][0, 1].abs().sum() == 0 and r["slave_h"][0, 0].sum() == 4 and r["master_h"].sum() == 8


def _grad_wrt_obs(net, obs_seq, state, alive, agent):
    obs_seq = [o.clone().requires_grad_(True) for o in obs_seq]
    outs = unroll(net, obs_seq, state, alive)
    loss = torch.log_softmax(outs[-1].params, -1)[:, agent].sum() + outs[-1].value[:, agent].sum()
    grads = torch.autograd.grad(loss, obs_seq, allow_unused=True)
    return [torch.zeros_like(o) if gr is None else gr for gr, o in zip(grads, obs_seq)]


def test_independent_agent_loss_never_reaches_other_agents_observations():
    net = make("independent")
    obs, state, alive = inputs()
    grads = _grad_wrt_obs(net, [obs, obs * 0.5, obs * 2.0], state, alive, agent=0)
    for gr in grads:
        assert gr[:, 0].abs().sum() > 0
        assert gr[:, 1:].abs().sum() == 0


@pytest.mark.parametrize("name", ["commnet", "bicnet", "ms_marl", "ms_marl_gcm"])
def test_communicating_models_pass_gradients_between_agents(name):
    net = make(name)
    obs, state, alive = inputs()
    grads = _grad_wrt_obs(net, [obs, obs * 0.5], state, alive, agent=0)
    if name != "bicnet":  # BiCNet has no memory across time steps
        assert grads[0][:, 1:].abs().sum() > 0  # agent 0's loss reaches the others' earlier observations
    if name != "commnet":  # CommNet (K=1) communicates through h_{t-1}; the others within the step
        assert grads[1][:, 1:].abs().sum() > 0


@pytest.mark.parametrize("name", ["ms_marl", "ms_marl_gcm"])
def test_slave_loss_trains_the_master(name):
    net = make(name)
    obs, state, alive = inputs()
    outs = unroll(net, [obs, obs.flip(0)], state, alive)
    loss = -torch.log_softmax(outs[-1].params, -1)[:, 2, 1].sum()  # one slave's log-probability
    net.zero_grad()
    loss.backward()
    for mod in (net.master_cell, net.master_head, net.state_enc, net.message):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), mod
    assert net.value_head.weight.grad is None or net.value_head.weight.grad.abs().sum() == 0  # no value term in this loss


def test_master_feedback_lets_a_slaves_own_proposal_depend_on_the_others():
    # regular MS-MARL: slave 0's own proposal a_0 = W_s h_0 sees only slave 0's observations;
    # with master_feedback the master's previous thought enters the slave's encoder, so a_0 at
    # t = 2 depends on the other slaves' observations at t = 1 (and on the state), never at t = 2
    obs, state, alive = inputs()
    for feedback in (False, True):
        net = make("ms_marl", master_feedback=feedback)
        assert (net.feedback is not None) == feedback
        o1, o2 = obs.clone().requires_grad_(True), (obs * 0.5).requires_grad_(True)
        s = state.clone().requires_grad_(True)
        outs = unroll(net, [o1, o2], s, alive)
        outs[-1].parts["slave"][:, 0].sum().backward()
        reaches = o1.grad[:, 1:].abs().sum() > 0
        assert bool(reaches) == feedback and (s.grad is not None and bool(s.grad.abs().sum() > 0)) == feedback
        assert o2.grad[:, 1:].abs().sum() == 0 and o2.grad[:, 0].abs().sum() > 0


def test_master_state_ablation_ignores_the_state():
    net = make("ms_marl", master_state=False)
    assert net.state_enc is None
    obs, state, alive = inputs()
    h = net.init_hidden(B, "cpu")
    a, b = net(obs, state, alive, h), net(obs, None, alive, h)
    torch.testing.assert_close(a.params, b.params)


def test_gcm_with_the_slave_gate_shut_equals_regular_ms_marl():
    gcm = make("ms_marl_gcm", seed=3)
    regular = make("ms_marl", seed=4)
    missing, unexpected = regular.load_state_dict(gcm.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"gate.weight", "gate.bias", "candidate.weight", "candidate.bias"}
    obs, state, alive = inputs()
    alive[0, 1] = False
    seq = [obs, obs * -1.0, obs + 0.3]
    gcm.slave_gate_open = False
    for x, y in zip(unroll(gcm, seq, state, alive), unroll(regular, seq, state, alive)):
        # same maths; only float rounding differs (a (B, N, H) matmul vs a (B, H) one broadcast)
        torch.testing.assert_close(x.params, y.params, rtol=0, atol=1e-6)
        torch.testing.assert_close(x.parts["master"], y.parts["master"], rtol=0, atol=1e-6)
        torch.testing.assert_close(x.value, y.value, rtol=0, atol=0)
    gcm.slave_gate_open = True
    # with the gate open the master's proposal differs per slave; regular MS-MARL broadcasts one
    out = unroll(gcm, seq, state, alive)[-1].parts["master"]
    assert (out[:, 0] - out[:, 2]).abs().max() > 1e-4
    reg = unroll(regular, seq, state, alive)[-1].parts["master"]
    torch.testing.assert_close(reg[:, 0], reg[:, 2], rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_dead_agents_change_nothing_for_the_others(name):
    net = make(name)
    obs, state, alive = inputs()
    alive[:, 1] = False
    alive[2, 3] = False
    h0 = net.init_hidden(B, "cpu")
    base = unroll(net, [obs, obs * 0.7], state, alive, h0)
    # perturb the dead agents' observations and their hidden states
    obs2 = obs.clone()
    obs2[:, 1] += 5.0
    obs2[2, 3] -= 3.0
    h1 = {k: v.clone() for k, v in h0.items()}
    for k, v in h1.items():
        if v.dim() == 3:
            v[:, 1] += 1.0
            v[2, 3] -= 2.0
    pert = unroll(net, [obs2, obs2 * 0.7], state, alive, h1)
    live = alive[..., None]
    for x, y in zip(base, pert):
        torch.testing.assert_close(torch.where(live, x.params, 0.0), torch.where(live, y.params, 0.0))
        torch.testing.assert_close(torch.where(alive, x.value, 0.0), torch.where(alive, y.value, 0.0))
        for k in x.hidden:  # dead agents keep a zero state, so nothing leaks into later steps
            torch.testing.assert_close(x.hidden[k], y.hidden[k])


def test_bicnet_over_alive_agents_equals_running_on_them_alone():
    torch.manual_seed(0)
    rnn = make_birnn("lstm", 3, 4)
    x = torch.randn(2, 5, 3)
    alive = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    got = over_agents(rnn, x, alive)
    alone, _ = rnn(x[0:1, [0, 2, 3]])
    torch.testing.assert_close(got[0, [0, 2, 3]], alone[0])
    assert got[0, [1, 4]].abs().sum() == 0 and got[1].abs().sum() == 0


def test_ms_marl_needs_a_state_unless_ablated():
    with pytest.raises(ValueError, match="master state"):
        MasterSlaveNet(D, N, A, 0)
    MasterSlaveNet(D, N, A, 0, master_state=False)
