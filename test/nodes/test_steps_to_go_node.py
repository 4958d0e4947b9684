"""The steps-to-go reward/success node with the embedded robot over loopback: episodes end on
timeout, the robot is reset, the next episode starts; a robot whose reset fails becomes a FAULT."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from ros_helpers import spin_until, stop_process




def _start(cmd, env):
    return subprocess.Popen([sys.executable, "-m", "efm_ros.cli", *cmd], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc):
    stop_process(proc)
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture
def graph(python_env, sim_model_dir):
    ns = ["--ros-args", "-r", "__ns:=/robot_3"]
    sim = _start(["sim-robot", *ns, "-p", "control_rate_hz:=20.0", "-p", "seed:=11"], python_env)
    stg = _start(["steps-to-go", *ns, "-p", f"model_dir:={sim_model_dir}", "-p", "max_episode_steps:=5",
                  "-p", "success_threshold:=0.0001", "-p", "reset_timeout_s:=1.0", "-p", "reset_retries:=2",
                  "-p", "fault_retry_s:=30.0", "-p", "input_timeout_s:=2.0", "-r", "camera/image:=camera/image_raw"], python_env)
    procs = {"sim": sim, "stg": stg}
    yield procs
    logs = {k: _stop(p) for k, p in procs.items()}
    print(logs["stg"][-3000:])


def test_episodes_timeout_reset_restart_and_fault(rclpy_context, graph):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from std_msgs.msg import String

    from efm_ros.msg import EpisodeEvent, StepsToGo

    node = rclpy.create_node("stg_tester", namespace="/robot_3", context=rclpy_context)
    events, stg, diags = [], [], []
    qos = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(EpisodeEvent, "episode_event", events.append, qos)
    node.create_subscription(StepsToGo, "steps_to_go", stg.append, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    stop_pub = node.create_publisher(String, "operator_stop", 10)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    kinds = lambda: [e.event for e in events]  # noqa: E731
    try:
        # two full episodes: START, TIMEOUT (5 actions), RESET_DONE, START, TIMEOUT, ...
        assert spin_until(ex, lambda: kinds().count(EpisodeEvent.TIMEOUT) >= 2 and kinds().count(EpisodeEvent.START) >= 3, 60), \
            (kinds(), graph["stg"].poll())
        # the second episode: the first may have started before this test's subscriptions matched
        # (episode events are transient-local and replayed, steps_to_go messages are not)
        first = [e for e in events if e.event == EpisodeEvent.START][1]
        timeout = [e for e in events if e.event == EpisodeEvent.TIMEOUT][1]
        assert timeout.episode_id == first.episode_id and timeout.steps == 5
        assert timeout.outcome == EpisodeEvent.OUTCOME_FAILURE and timeout.robot == "robot_3"
        assert kinds()[kinds().index(EpisodeEvent.TIMEOUT) + 1] == EpisodeEvent.RESET_DONE
        ep = [m for m in stg if m.episode_id == first.episode_id]
        assert [m.step for m in ep] == list(range(6))  # frames 0..5

        # a frame with a negative stamp on camera/image is a counted rejection, not a crash
        from builtin_interfaces.msg import Time as TimeMsg
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from efm_ros.nodes.images import numpy_to_image
        bad_pub = node.create_publisher(Image, "camera/image", qos_profile_sensor_data)
        bad = numpy_to_image(np.zeros((96, 96, 3), np.uint8), TimeMsg(sec=-1, nanosec=0))
        for _ in range(5):
            bad_pub.publish(bad)
            spin_until(ex, lambda: False, 0.1)
        n_starts = kinds().count(EpisodeEvent.START)
        assert spin_until(ex, lambda: kinds().count(EpisodeEvent.START) > n_starts, 30), "episodes stopped"
        assert graph["stg"].poll() is None, "a bad stamp took the node down"
        assert ep[0].reward == 0.0
        for a, b in zip(ep, ep[1:]):  # r_t = d_{t-1} - d_t
            assert b.reward == pytest.approx(a.expected_steps - b.expected_steps, abs=1e-4)
        assert len(ep[0].distribution) == 50 and abs(sum(ep[0].distribution) - 1.0) < 1e-3
        starts = [e for e in events if e.event == EpisodeEvent.START]
        assert len({s.episode_id for s in starts}) == len(starts)  # a fresh id per episode

        # the operator stops an episode: it ends at once, the robot is reset, the next one starts
        n = len(events)
        stop_pub.publish(String(data="block fell off the table"))
        assert spin_until(ex, lambda: EpisodeEvent.START in kinds()[n + 1:], 30), kinds()[n:]
        stop = [e for e in events[n:] if e.event == EpisodeEvent.OPERATOR_STOP]
        assert stop and "block fell off" in stop[0].termination_reason

        # the policy is stopped (a safe stop: its lifecycle state is not active): the running episode
        # ends by its rules, then no episode starts (and no reset is asked for) until it is active again
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        state_pub = node.create_publisher(String, "policy/state", latched)
        state_pub.publish(String(data="inactive"))
        spin_until(ex, lambda: False, 1.0)                                   # it has arrived
        assert spin_until(ex, lambda: kinds()[-1] == EpisodeEvent.RESET_DONE, 30), kinds()[-4:]
        n = len(events)
        spin_until(ex, lambda: False, 2.0)
        assert kinds()[n:] == [], kinds()[n:]
        state_pub.publish(String(data="active"))
        assert spin_until(ex, lambda: EpisodeEvent.START in kinds()[n:], 30), kinds()[n:]

        # the robot dies mid-episode: its camera goes silent -> the episode ends with a FAULT
        # (input lost, within input_timeout_s), the reset cannot happen -> a reset FAULT, no hang
        n = len(events)
        assert spin_until(ex, lambda: EpisodeEvent.START in kinds()[n:], 30)  # an episode is running (5 ticks, 250 ms)
        graph["sim"].kill()
        graph["sim"].wait(timeout=10)
        n = len(events)
        t0 = time.monotonic()
        faults = lambda: [e for e in events[n:] if e.event == EpisodeEvent.FAULT]  # noqa: E731
        assert spin_until(ex, lambda: len(faults()) >= 1, 30), kinds()[n:]
        if kinds()[n:][:1] != [EpisodeEvent.TIMEOUT]:   # the episode had not ended before the kill took effect
            assert faults()[0].termination_reason.startswith("input lost: no camera/image"), faults()[0]
            assert time.monotonic() - t0 < 2.0 + 3.0
            assert spin_until(ex, lambda: len(faults()) >= 2, 30), kinds()[n:]
        assert "reset failed" in faults()[-1].termination_reason

        def level():
            for arr in reversed(diags):
                for st in arr.status:
                    if "steps-to-go" in st.name:
                        return st.level
            return None
        assert spin_until(ex, lambda: level() == DiagnosticStatus.ERROR, 10)
        assert graph["stg"].poll() is None, "the node must stay up while faulty"
    finally:
        ex.shutdown()
        node.destroy_node()


def test_a_silent_policy_or_a_vanished_logger_ends_the_episode_with_a_fault(rclpy_context, python_env, sim_model_dir):
    """The reward node watches what a running episode depends on besides the camera: a policy that
    stops acting (policy_timeout_s) and the robot's logger (wait_for_logger). Either becomes a FAULT
    "input lost: ..." and WARN on /diagnostics; without the logger no new episode starts."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from efm_ros.msg import EpisodeEvent, PolicyAction

    ns = ["--ros-args", "-r", "__ns:=/robot_5"]
    sim = _start(["sim-robot", *ns, "-p", "control_rate_hz:=20.0", "-p", "seed:=3"], python_env)
    stg = _start(["steps-to-go", *ns, "-p", f"model_dir:={sim_model_dir}", "-p", "max_episode_steps:=100000",
                  "-p", "success_threshold:=0.0001", "-p", "policy_timeout_s:=1.0", "-p", "wait_for_logger:=rec",
                  "-r", "camera/image:=camera/image_raw"], python_env)
    rec = rclpy.create_node("rec", namespace="/robot_5", context=rclpy_context)     # stands in for the logger
    events, diags = [], []
    qos = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(rec)
    subs = []

    def record():
        subs.append(rec.create_subscription(EpisodeEvent, "episode_event", events.append, qos))
        # the node's camera/image is remapped to camera/image_raw here: a recorder records what it reads
        subs.append(rec.create_subscription(Image, "camera/image_raw", lambda m: None, qos_profile_sensor_data))

    rec.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    act = rec.create_publisher(PolicyAction, "policy_action", 10)
    kinds = lambda: [e.event for e in events]  # noqa: E731

    def warning():
        for arr in reversed(diags):
            for st in arr.status:
                if "steps-to-go" in st.name:
                    return st.message if st.level == DiagnosticStatus.WARN else None
        return None
    try:
        record()
        assert spin_until(ex, lambda: EpisodeEvent.START in kinds(), 60), (kinds(), stg.poll())
        # a policy that acts keeps the episode going; one that stops for 1 s ends it
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            act.publish(PolicyAction(episode_id="x"))
            spin_until(ex, lambda: False, 0.1)
        assert EpisodeEvent.FAULT not in kinds(), [e.termination_reason for e in events]
        assert spin_until(ex, lambda: EpisodeEvent.FAULT in kinds(), 10), kinds()
        fault = [e for e in events if e.event == EpisodeEvent.FAULT][0]
        assert fault.termination_reason.startswith("input lost: no policy_action"), fault.termination_reason
        assert spin_until(ex, lambda: (warning() or "").find("no policy_action") >= 0, 10), warning()
        # the logger goes away mid-episode: FAULT, and no START until it records again
        assert spin_until(ex, lambda: kinds().count(EpisodeEvent.START) >= 2, 30), kinds()
        for s in subs:
            rec.destroy_subscription(s)
        subs.clear()
        events_seen = []
        rec.create_subscription(EpisodeEvent, "episode_event", events_seen.append, qos)  # not both topics: not a recorder
        assert spin_until(ex, lambda: any(e.event == EpisodeEvent.FAULT and "stopped recording" in e.termination_reason
                                          for e in events_seen), 15), [e.termination_reason for e in events_seen]
        n = sum(e.event == EpisodeEvent.START for e in events_seen)
        spin_until(ex, lambda: False, 3.0)
        assert sum(e.event == EpisodeEvent.START for e in events_seen) == n, "an episode started with no logger"
        assert "stopped recording" in (warning() or "")
        record()
        assert spin_until(ex, lambda: sum(e.event == EpisodeEvent.START for e in events_seen) > n, 30)
        assert stg.poll() is None and sim.poll() is None
    finally:
        ex.shutdown()
        rec.destroy_node()
        print(_stop(stg)[-3000:])
        _stop(sim)
