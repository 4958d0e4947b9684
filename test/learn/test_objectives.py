"""The paper's equations (efm_ros.learn.objectives) against hand-computed numbers."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from efm_ros.learn import objectives as obj
from efm_ros.model.bins import StepsToGoBins

LN = math.log


def _action_logits():
    # sample 0: dim 0 logits [0, 0, ln2] -> p = [1/4, 1/4, 1/2]; dim 1 logits [ln3, 0, 0] -> p = [3/5, 1/5, 1/5]
    row = [[0.0, 0.0, LN(2)], [LN(3), 0.0, 0.0]]
    return torch.tensor([row, row])                                   # (B=2, D=2, K=3)


def test_action_log_prob_and_bc_loss_hand_computed():
    logits, tokens = _action_logits(), torch.tensor([[2, 0], [0, 1]])
    # sample 0: log(1/2) + log(3/5) = log 0.3 ; sample 1: log(1/4) + log(1/5) = log 0.05
    lp = obj.action_log_prob(logits, tokens)
    assert lp.shape == (2,)
    assert lp.tolist() == pytest.approx([LN(0.3), LN(0.05)], abs=1e-6)
    # L_BC = -(log 0.3 + log 0.05) / 2 = (1.2039728 + 2.9957323) / 2 = 2.0998525
    assert obj.bc_loss(logits, tokens).item() == pytest.approx(2.0998525, abs=1e-6)
    # the same as per-token cross-entropy summed over the 2 dims, averaged over the batch
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), tokens.reshape(-1), reduction="sum") / 2
    assert obj.bc_loss(logits, tokens).item() == pytest.approx(ce.item(), abs=1e-6)


def test_action_entropy_hand_computed():
    # dim 0: -(2 * 1/4 log 1/4 + 1/2 log 1/2) = 1.5 ln 2 = 1.0397208
    # dim 1: -(3/5 log 3/5 + 2 * 1/5 log 1/5) = 0.3064954 + 0.6437752 = 0.9502706 ; sum 1.9899914
    h = obj.action_entropy(_action_logits())
    assert h.tolist() == pytest.approx([1.9899914] * 2, abs=1e-6)


def test_steps_to_go_loss_hand_computed():
    logits = torch.tensor([[0.0, LN(3), 0.0, 0.0]] * 2)              # p = [1/6, 1/2, 1/6, 1/6]
    bins = torch.tensor([1, 3])
    # -(log 1/2 + log 1/6) / 2 = (ln 2 + ln 6) / 2 = ln(12) / 2 = 1.2424533
    assert obj.steps_to_go_loss(logits, bins).item() == pytest.approx(1.2424533, abs=1e-6)
    # labels t' - t go through StepsToGoBins.encode: 3 steps -> bin 1, 250 steps -> clipped to bin 49
    b = StepsToGoBins()
    labels = torch.from_numpy(b.encode(np.array([3, 250])))
    assert labels.tolist() == [1, 49]
    assert obj.steps_to_go_loss(torch.zeros(2, 50), labels).item() == pytest.approx(LN(50), abs=1e-6)


def test_expected_steps_to_go_hand_computed():
    logits = [[0.0, LN(3), 0.0, 0.0]]                                   # p = [1/6, 1/2, 1/6, 1/6]
    values = [0.5, 2.5, 4.5, 6.5]
    # d = 0.5/6 + 2.5/2 + 4.5/6 + 6.5/6 = 11.5/6 + 1.25 = 3.1666667
    d_t = obj.expected_steps_to_go(torch.tensor(logits), torch.tensor(values))
    d_np = obj.expected_steps_to_go(np.array(logits), np.array(values))
    assert d_t.shape == (1,) and d_np.shape == (1,)
    assert d_t.item() == pytest.approx(3.1666667, abs=1e-5)
    assert d_np[0] == pytest.approx(19 / 6, abs=1e-12)
    # a confident distribution on bin k gives that bin's representative step count
    b = StepsToGoBins()
    onehot = np.full((1, 50), -1e9)
    onehot[0, 7] = 0.0
    assert obj.expected_steps_to_go(onehot, b.values)[0] == pytest.approx(14.5)   # bin 7 holds {14, 15}


def test_progress_reward_success_and_consecutive():
    d = np.array([10.0, 7.5, 8.0, 3.0])
    assert obj.progress_reward(d[:-1], d[1:]).tolist() == [2.5, -0.5, 5.0]   # d_t - d_{t+1}
    assert obj.progress_reward(4.0, 1.5) == 2.5
    assert obj.is_success(np.array([0.5, 1.0, 1.5]), 1.0).tolist() == [True, True, False]
    seq = [5, 1, 0.5, 3, 1, 1, 0.2]            # d <= 1: F T T F T T T ; runs: 0 1 2 0 1 2 3
    assert obj.consecutive_success(seq, 1.0, 2).tolist() == [False, False, True, False, False, True, True]
    assert obj.consecutive_success(seq, 1.0, 3).tolist() == [False] * 6 + [True]
    assert obj.consecutive_success(seq, 1.0, 1).tolist() == obj.is_success(np.array(seq), 1.0).tolist()
    with pytest.raises(ValueError):
        obj.consecutive_success(seq, 1.0, 0)


def test_discounted_returns_hand_computed():
    # r = [2.5, -0.5, 5], γ = 0.9: R_2 = 5 ; R_1 = -0.5 + 0.9 * 5 = 4.0 ; R_0 = 2.5 + 0.9 * 4.0 = 6.1
    assert obj.discounted_returns([2.5, -0.5, 5.0], 0.9) == pytest.approx([6.1, 4.0, 5.0], abs=1e-12)
    assert obj.discounted_returns([1.0, 1.0], 0.0).tolist() == [1.0, 1.0]
    assert obj.discounted_returns([], 0.9).shape == (0,)


def test_shaped_return_telescopes():
    """R_t with r_i = d_i - d_{i+1} = V_{i+1} - V_i (V = -d), i = t..T, o_{T+1} the last observation:

    R_t = Σ_{i=t}^{T} γ^{i-t} V_{i+1} - Σ_{i=t}^{T} γ^{i-t} V_i
        = Σ_{i=t}^{T} γ^{i-t} V_{i+1} - V_t - Σ_{i=t}^{T-1} γ^{i+1-t} V_{i+1}      (shift i -> i+1)
        = (1-γ) Σ_{i=t}^{T-1} γ^{i-t} V_{i+1} + γ^{T-t} V_{T+1} - V_t            (PAPER.md §2.4)
    Hand check on d = [10, 7.5, 8, 3] (T = 2), t = 0: 0.1 (-7.5 - 0.9*8) + 0.81 (-3) + 10 = 6.1 = R_0 above.
    """
    rng = np.random.default_rng(0)
    gamma = 0.9
    for T in (0, 1, 5, 30):
        d = rng.uniform(0, 100, T + 2)                          # d(o_0) .. d(o_{T+1})
        R = obj.discounted_returns(obj.progress_reward(d[:-1], d[1:]), gamma)
        V = -d
        for t in range(T + 1):
            core = sum(gamma ** (i - t) * V[i + 1] for i in range(t, T))
            expect = (1 - gamma) * core + gamma ** (T - t) * V[T + 1] - V[t]
            assert R[t] == pytest.approx(expect, abs=1e-9)


def test_reinforce_loss_hand_computed_and_returns_are_constants():
    log_probs = torch.tensor([-0.5, -3.0], requires_grad=True)
    returns = torch.tensor([4.0, -1.0], requires_grad=True)
    # -c R log π: -0.05 * 4 * -0.5 = 0.1 ; -0.05 * -1 * -3 = -0.15 ; mean = -0.025
    loss = obj.reinforce_loss(log_probs, returns, c=0.05)
    assert loss.item() == pytest.approx(-0.025, abs=1e-7)
    loss.backward()
    # dL/dlog π_b = -c R_b / B = [-0.1, 0.025]; no gradient reaches the returns
    assert log_probs.grad.tolist() == pytest.approx([-0.1, 0.025], abs=1e-7)
    assert returns.grad is None
    assert obj.reinforce_loss(log_probs, np.array([4.0, -1.0])).item() == pytest.approx(-0.025, abs=1e-7)


@pytest.mark.parametrize("ret", [2.0, -2.0])
def test_reinforce_step_moves_log_prob_with_the_sign_of_the_return(ret):
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 21, requires_grad=True)
    tokens = torch.tensor([[3, 17]])
    before = obj.action_log_prob(logits, tokens).item()
    loss = obj.reinforce_loss(obj.action_log_prob(logits, tokens), torch.tensor([ret]))
    loss.backward()
    with torch.no_grad():
        logits -= 1.0 * logits.grad                               # one SGD step
    after = obj.action_log_prob(logits, tokens).item()
    assert (after - before) * ret > 0          # positive return -> log π(a) up; negative -> down


def test_objectives_import_without_torch():
    code = "import sys, efm_ros.learn.objectives; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
