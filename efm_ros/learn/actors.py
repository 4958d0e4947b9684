"""In-process actors: the exported policy practising on the embedded robot, without ROS.

The live graph (camera → policy → robot, steps-to-go node, logger) is what runs on real arms and
in ``make demo``. For experiments that need thousands of episodes on 2 CPU cores, the same pieces
run here in one loop, with the SAME episode rules (:class:`efm_ros.control.episode.EpisodeTracker`:
reward, d ≤ s for k ticks, T_max), the SAME models (ONNX Runtime via
:func:`efm_ros.model.runtime.load_model`) and the SAME episode record
(:class:`efm_ros.data.episode.Episode`, writable as a bag) — only the transport differs.

Per tick t: observe o_t → the frozen reward model gives d(o_t, g) → the tracker may end the
episode (then o_t is its last frame, with no action) → otherwise the policy samples a_t from
π(·|o_t, o_{t−1}, g) → the robot steps. Ground-truth success is recorded for evaluation only.
"""
from __future__ import annotations

import json

import numpy as np

from efm_ros.control.episode import EpisodeConfig, EpisodeTracker
from efm_ros.data.episode import Episode, EventRecord, StepsToGoTrack
from efm_ros.data.interfaces import BOOL_TYPE, EVAL_SUCCESS_TOPIC, typestore
from efm_ros.model.bins import T_MAX

ACTION_STREAM = 0xAC7
"""second word of the action-sampling seed (rollout seed, ACTION_STREAM), independent of the layout's"""

_OUTCOME = {0: "unknown", 1: "success", 2: "failure"}
_EVENT = {0: "start", 1: "success", 2: "timeout", 3: "operator_stop", 4: "reset_done", 5: "fault"}


def episode_config_for(reward_model, max_steps: int = T_MAX) -> EpisodeConfig:
    """The reward model's calibrated s and k with the given T_max."""
    return EpisodeConfig(success_threshold=reward_model.success_threshold, success_k=reward_model.success_k,
                         max_steps=max_steps)


def rollout(robot, policy, reward_model, *, seed: int, episode_id: str, robot_name: str = "sim_0",
            max_steps: int = T_MAX, instruction: str | None = None, rng: np.random.Generator | None = None,
            control_rate_hz: float | None = None, oracle=None, stop_on_oracle: bool = False) -> Episode:
    """One episode of ``policy`` (an OnnxEFM) on ``robot`` judged by ``reward_model`` (OnnxEFM).

    Experiment code only (the Stage-2 ladder): ``oracle`` (``learn.oracle.OracleStepsToGo`` on this
    robot) records its privileged d per frame in ``custom_data["oracle_d"]``; ``stop_on_oracle``
    ends the episode on the oracle (ground truth) instead of the learned detector."""
    # the layout comes from np.random.default_rng(seed) inside the robot: the actions get their own
    # stream, or the policy's sampling noise would replay the layout's random numbers
    rng = rng or np.random.default_rng([int(seed), ACTION_STREAM])
    if stop_on_oracle and oracle is None:
        raise ValueError("stop_on_oracle needs an oracle")
    detector = oracle if stop_on_oracle else reward_model
    tracker = EpisodeTracker(episode_config_for(detector, max_steps))
    oracle_d = []
    text = robot.reset(seed=seed, instruction=instruction)
    tracker.start(episode_id, text)
    rate = control_rate_hz or getattr(robot, "control_rate_hz", 10.0)
    tick_ns = int(1e9 / rate)
    frames, actions, tokens, logps, ents, ds, dists, rewards, fired, gt = [], [], [], [], [], [], [], [], [], []
    prev = None
    end = None
    while end is None:
        frame = np.array(robot.observe(), copy=True)
        frames.append(frame)
        gt.append(bool(robot.success()))
        prev_in = frame if prev is None else prev
        d, dist = reward_model.steps_to_go(frame, prev_in, text)
        if oracle is not None:
            oracle_d.append(oracle.steps_to_go(frame, prev_in, text)[0])
        res = tracker.tick(oracle_d[-1] if stop_on_oracle else d)
        ds.append(d), dists.append(dist), rewards.append(res.reward), fired.append(res.success)
        if res.event is not None:
            end = res.event
            break
        a, tok, lp, ent = policy.act(frame, prev_in, text, rng)
        actions.append(a), tokens.append(tok), logps.append(lp), ents.append(ent)
        robot.step(a)
        prev = frame
    T = len(actions)  # 0 when the detector fires on the first tick: an episode with no action
    dims = policy.action_bins.dims
    stamps = np.arange(T + 1, dtype=np.int64) * tick_ns
    track = StepsToGoTrack(present=np.ones(T + 1, bool), expected_steps=np.asarray(ds, np.float32),
                           distributions=np.asarray(dists, np.float32), rewards=np.asarray(rewards, np.float32),
                           success=np.asarray(fired, bool), model_versions=[reward_model.version] * (T + 1),
                           episode_ids=[episode_id] * (T + 1))
    outcome = _OUTCOME[int(end.outcome)]
    events = [EventRecord(0, "start", instruction=text),
              EventRecord(int(stamps[-1]), _EVENT[int(end.event)], outcome=outcome, termination_reason=end.reason,
                          steps=T, instruction=text, policy_version=policy.version,
                          reward_model_version=reward_model.version,
                          success_threshold=tracker.config.success_threshold, success_k=tracker.config.success_k)]
    extra_data = {}
    if oracle is not None:
        from efm_ros.learn.oracle import ORACLE_D_KEY

        extra_data = {ORACLE_D_KEY: json.dumps([round(float(x), 5) for x in oracle_d]), "oracle": oracle.version,
                      "termination": "oracle" if stop_on_oracle else "detector"}
    return Episode(robot=robot_name, episode_id=episode_id, instruction=text, frames=np.stack(frames),
                   frame_stamps_ns=stamps, actions=np.asarray(actions, np.float32).reshape(T, dims),
                   tokens=np.asarray(tokens, np.int32).reshape(T, dims), log_probs=np.asarray(logps, np.float32),
                   entropies=np.asarray(ents, np.float32), policy_versions=[policy.version] * T,
                   outcome=outcome, termination_reason=end.reason, events=events, steps_to_go=track,
                   custom_data={"seed": str(seed), "control_rate_hz": str(rate), "source": "policy",
                                "gt_success": str(gt[-1]).lower(), **extra_data},
                   extras={EVAL_SUCCESS_TOPIC: [(int(s), _bool_msg(g)) for s, g in zip(stamps, gt)]})


def _bool_msg(value: bool):
    """A std_msgs/Bool as the bag layer stores it (what the sim robot publishes on eval/success)."""
    return typestore().types[BOOL_TYPE](data=bool(value))
