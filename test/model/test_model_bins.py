"""Round trips of the action and steps-to-go tokenisation (efm_ros.model.bins)."""
import numpy as np
import pytest

from efm_ros.model.bins import ActionBins, StepsToGoBins


def test_action_tokens_round_trip():
    bins = ActionBins()
    tokens = np.stack(np.meshgrid(np.arange(21), np.arange(21)), -1).reshape(-1, 2)
    assert (bins.encode(bins.decode(tokens)) == tokens).all()          # every token pair
    assert bins.decode([[10, 10]]).tolist() == [[0.0, 0.0]]            # 0 is the centre bin
    assert bins.decode([[0, 20]]).tolist() == [[-1.0, 1.0]]


def test_action_encode_nearest_centre_and_clipping():
    bins = ActionBins()
    a = np.random.default_rng(0).uniform(-1, 1, (1000, 2))
    err = np.abs(bins.decode(bins.encode(a)) - a)
    assert err.max() <= 0.05 + 1e-6                                    # half the bin spacing 0.1
    assert bins.encode([[-3.0, 7.0]]).tolist() == [[0, 20]]            # out of range -> end bins
    assert bins.encode([[0.04, -0.06]]).tolist() == [[10, 9]]
    with pytest.raises(ValueError):
        bins.encode([0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        bins.decode([[21, 0]])


def test_steps_to_go_labels_and_clipping():
    bins = StepsToGoBins()                                              # 0..100 in 50 bins of width 2
    assert bins.encode(np.array([0, 1, 2, 3, 98, 99, 100, 101, 1000])).tolist() == [0, 0, 1, 1, 49, 49, 49, 49, 49]
    # each bin's representative value is the mean of the step counts it holds: {2k, 2k+1} -> 2k + 0.5
    assert bins.values[:3].tolist() == [0.5, 2.5, 4.5] and bins.values[-1] == 98.5
    steps = np.arange(100)
    assert (bins.encode(bins.values) == np.arange(50)).all()            # values decode to their own bin
    assert np.abs(bins.values[bins.encode(steps)] - steps).max() == 0.5
    with pytest.raises(ValueError):
        bins.encode(-1)
