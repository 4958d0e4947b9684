import math

import pytest

from efm_ros.control.episode import EpisodeConfig, EpisodeTracker, Event, Outcome, Phase


def run(tracker, ds):
    return [tracker.tick(d) for d in ds]


def test_rewards_are_the_drop_in_d_and_zero_on_the_first_tick():
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0, success_k=2))
    assert t.start("e1", "push the red block to the blue block").event is Event.START
    res = run(t, [20.0, 17.5, 18.0, 10.0])
    assert [r.reward for r in res] == [0.0, 2.5, -0.5, 8.0]  # r_t = d_{t-1} - d_t
    assert [r.step for r in res] == [0, 1, 2, 3]
    assert all(r.event is None for r in res) and t.phase is Phase.RUNNING


def test_success_needs_k_consecutive_ticks_below_s():
    t = EpisodeTracker(EpisodeConfig(success_threshold=2.0, success_k=3))
    t.start("e", "i")
    res = run(t, [5.0, 1.5, 1.0, 3.0, 1.9, 2.0])  # a single dip above s resets the count
    assert [r.success for r in res] == [False, False, False, False, False, False]
    last = t.tick(0.5)  # 1.9, 2.0, 0.5: three in a row <= s
    assert last.success and last.event.event is Event.SUCCESS and last.event.outcome is Outcome.SUCCESS
    assert last.event.steps == 6 and t.phase is Phase.RESETTING
    with pytest.raises(RuntimeError):
        t.tick(0.1)


def test_timeout_after_max_steps_actions():
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0, max_steps=3))
    t.start("e", "i")
    res = run(t, [10.0, 9.0, 8.0, 7.0])  # frames 0..3: three actions taken
    assert [r.event for r in res[:3]] == [None, None, None]
    assert res[3].event.event is Event.TIMEOUT and res[3].event.outcome is Outcome.FAILURE


def test_a_fleet_pause_truncates_the_episode_as_a_timeout_at_a_ticked_frame():
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0, max_steps=100))
    t.start("e", "i")
    assert t.truncate("timeout: fleet pause") is None                  # no frame ticked yet: nothing to end
    assert t.phase is Phase.RUNNING
    run(t, [10.0, 9.0, 8.5])
    end = t.truncate("timeout: fleet pause")
    assert (end.event, end.outcome, end.steps, end.reason) == (Event.TIMEOUT, Outcome.FAILURE, 2, "timeout: fleet pause")
    assert t.phase is Phase.RESETTING and t.truncate("again") is None


def test_operator_stop_and_reset_cycle():
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0))
    assert t.operator_stop() is None  # nothing running
    t.start("e1", "i")
    t.tick(5.0)
    ev = t.operator_stop("bad configuration")
    assert ev.event is Event.OPERATOR_STOP and ev.reason == "bad configuration"
    assert t.reset_succeeded().event is Event.RESET_DONE and t.phase is Phase.WAITING
    t.start("e2", "j")
    assert t.tick(4.0).reward == 0.0  # the new episode does not inherit d from the last one


def test_failed_resets_become_one_fault_then_recover():
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0, reset_retries=2, max_steps=1))
    t.start("e", "i")
    t.tick(9.0); t.tick(9.0)  # timeout
    assert t.reset_failed("timeout") is None
    fault = t.reset_failed("timeout")
    assert fault.event is Event.FAULT and "2 times" in fault.reason and t.phase is Phase.FAULT
    assert t.reset_failed("still broken") is None  # the fault is raised once
    assert t.reset_succeeded().event is Event.RESET_DONE and t.phase is Phase.WAITING


def test_nan_d_is_refused():
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0))
    t.start("e", "i")
    with pytest.raises(ValueError):
        t.tick(math.nan)


def test_invalid_config_and_start_rules():
    with pytest.raises(ValueError):
        EpisodeConfig(success_threshold=1.0, success_k=0)
    t = EpisodeTracker(EpisodeConfig(success_threshold=1.0))
    with pytest.raises(ValueError):
        t.start("e", "")
    t.start("e", "i")
    with pytest.raises(RuntimeError):
        t.start("e2", "i")


def test_the_live_reward_is_the_training_reward_one_tick_later():
    """The tracker publishes r_t = d(o_t) - d(o_{t+1}) at frame t+1; the learner recomputes the same r_t
    for action t from the recorded d (objectives.episode_returns): pinned equal, episode ends included."""
    import numpy as np

    from efm_ros.learn.objectives import episode_returns

    rng = np.random.default_rng(3)
    for trial in range(20):
        d = np.concatenate([rng.uniform(3, 60, rng.integers(2, 30)), [0.5]])   # ends on success (d <= s)
        t = EpisodeTracker(EpisodeConfig(success_threshold=1.0, success_k=1, max_steps=100))
        t.start(f"e{trial}", "push the red block to the blue block")
        live = [r.reward for r in run(t, d)]
        assert t.phase is Phase.RESETTING
        train, _ = episode_returns(d, 0.9)
        np.testing.assert_allclose(live[1:], train, rtol=0, atol=1e-12)


def test_a_silent_input_ends_the_running_episode_with_a_fault():
    from efm_ros.control.episode import INPUT_LOST, Event, Outcome, Phase

    tr = EpisodeTracker(EpisodeConfig(success_threshold=1.0, success_k=1))
    assert tr.input_lost("no camera frame for 2 s") is None          # no episode: nothing to end
    tr.start("e1", "push the red block")
    tr.tick(30.0)
    rec = tr.input_lost("no camera frame for 2 s")
    assert rec.event is Event.FAULT and rec.outcome is Outcome.UNKNOWN and rec.reason.startswith(INPUT_LOST)
    assert rec.steps == 0 and tr.phase is Phase.RESETTING
    assert tr.reset_succeeded().event is Event.RESET_DONE and tr.phase is Phase.WAITING
