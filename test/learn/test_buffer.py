import numpy as np
import pytest

from efm_ros.learn.buffer import OnPolicyBuffer, episode_returns, minibatch_indices, on_policy_filter


def test_returns_from_d_by_hand():
    # d = 10, 8, 9, 5 -> r = 2, -1, 4; gamma 0.5: R_2 = 4, R_1 = -1 + 0.5*4 = 1, R_0 = 2 + 0.5*1 = 2.5
    r, R = episode_returns([10.0, 8.0, 9.0, 5.0], gamma=0.5)
    np.testing.assert_allclose(r, [2.0, -1.0, 4.0])
    np.testing.assert_allclose(R, [2.5, 1.0, 4.0])


def test_shaped_return_telescopes_to_a_baseline_plus_discounted_values():
    # r_i = d_i - d_{i+1} with V = -d:  R_t = (1-g) sum_{i=t}^{T-1} g^{i-t} V(o_{i+1}) + g^{T-t} ... - V(o_t)
    # for rewards r_t..r_{T-1} (T actions): R_t = d_t - (1-g) sum_{i=t}^{T-2} g^{i-t} d_{i+1} - g^{T-1-t} d_T
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 50, size=12)
    g = 0.9
    _, R = episode_returns(d, g)
    T = len(d) - 1
    for t in range(T):
        tele = d[t] - (1 - g) * sum(g ** (i - t) * d[i + 1] for i in range(t, T - 1)) - g ** (T - 1 - t) * d[T]
        assert R[t] == pytest.approx(tele, rel=1e-9, abs=1e-9)


def test_on_policy_filter_by_version():
    assert on_policy_filter(["v2", "v2"], "v2") == (True, "")
    ok, why = on_policy_filter(["v1", "v2"], "v2")
    assert not ok and "v1" in why
    assert not on_policy_filter([], "v2")[0]


def test_buffer_fills_to_n_times_b_and_minibatches_never_reuse_a_transition():
    buf = OnPolicyBuffer(version="v3")
    for n in (30, 25, 20):
        buf.add_episode(np.zeros((n, 4)), np.zeros((n, 4)), np.zeros((n, 8)), np.zeros((n, 2)), np.arange(n))
    assert len(buf) == 75 and buf.episodes == 3
    assert not buf.ready(updates=4, batch_size=20)
    assert buf.ready(updates=4, batch_size=16)
    batches = minibatch_indices(len(buf), 4, 16, np.random.default_rng(0))
    flat = np.concatenate(batches)
    assert len(batches) == 4 and all(len(b) == 16 for b in batches)
    assert len(set(flat.tolist())) == 64  # without replacement
    with pytest.raises(ValueError):
        minibatch_indices(len(buf), 5, 16, np.random.default_rng(0))
    buf.clear(version="v4")
    assert len(buf) == 0 and buf.version == "v4" and buf.episodes == 0
    with pytest.raises(ValueError):
        buf.add_episode(np.zeros((3, 4)), np.zeros((2, 4)), np.zeros((3, 8)), np.zeros((3, 2)), np.zeros(3))
