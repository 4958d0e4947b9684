"""The lifecycle policy node in its own process, driven over loopback with an exported model:
actions stamped with their source frames, hot-swap mid-run (watch_dir and model_dir), corrupt
versions refused, the stale-frame watchdog, episode ends, lifecycle safe stop, and a node that
survives a missing model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import spin_until

INSTRUCTION = "push the red block to the blue block"




def _start_policy(python_env, log: Path, ns: str, *params: str):
    args = [sys.executable, "-m", "efm_ros.nodes.policy", "--ros-args", "-r", f"__ns:={ns}"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, env=python_env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _stop(proc, log: Path) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"--- {log.name} ---\n{log.read_text()[-4000:]}")


def _new_version(src: Path, watch_dir: Path, version: str, corrupt: bool = False) -> Path:
    """Copy a model as ``version`` into watch_dir the way the exporter does (hidden dir + rename)."""
    tmp = watch_dir / f".{version}.partial"
    shutil.copytree(src, tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["model_version"] = version                  # manifest.json itself is not hashed
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if corrupt:
        data = bytearray((tmp / "policy.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (tmp / "policy.onnx").write_bytes(bytes(data))
    tmp.rename(watch_dir / version)
    return watch_dir / version


def _policy_status(diags: list, ns: str) -> dict:
    """The newest /diagnostics key/values of the policy node in ``ns`` ({} before its first)."""
    for arr in reversed(diags):
        for st in arr.status:
            if st.name == f"{ns}/policy: policy":
                return {kv.key: kv.value for kv in st.values}
    return {}


@pytest.fixture
def policy_processes(python_env, sim_model_dir, tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    logs = {"good": tmp_path / "policy_good.log", "missing": tmp_path / "policy_missing.log"}
    procs = {
        "good": _start_policy(python_env, logs["good"], "/robot_8", f"model_dir:={sim_model_dir}",
                              f"watch_dir:={watch}", "watch_period_s:=0.1", "control_rate_hz:=20.0",
                              "stale_frame_timeout_s:=0.4", "seed:=3", "inference_threads:=1"),
        "missing": _start_policy(python_env, logs["missing"], "/robot_9", f"model_dir:={tmp_path / 'no_model'}",
                                 "trigger:=frame", "wait_for_model:=true"),
    }
    yield procs, watch
    for k, p in procs.items():
        _stop(p, logs[k])


def test_policy_node_end_to_end(rclpy_context, policy_processes, sim_model_dir, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from geometry_msgs.msg import TwistStamped
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from efm_ros.msg import EpisodeEvent, PolicyAction, StepsToGo
    from efm_ros.nodes.images import numpy_to_image
    from efm_ros.sim.tabletop import TabletopRobot

    procs, watch = policy_processes
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    events_qos = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node = rclpy.create_node("policy_tester", namespace="/robot_8", context=rclpy_context)
    actions, twists, diags = [], [], []
    node.create_subscription(PolicyAction, "policy_action", actions.append, 100)
    node.create_subscription(TwistStamped, "cmd_vel", twists.append, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    image_pub = node.create_publisher(Image, "camera/image", qos_profile_sensor_data)
    image_pub_9 = node.create_publisher(Image, "/robot_9/camera/image", qos_profile_sensor_data)
    for ns in ("robot_8", "robot_9"):
        node.create_publisher(String, f"/{ns}/instruction", latched).publish(String(data=INSTRUCTION))
    event_pub = node.create_publisher(EpisodeEvent, "episode_event", events_qos)
    event_pub_9 = node.create_publisher(EpisodeEvent, "/robot_9/episode_event", events_qos)
    actions_9 = []
    node.create_subscription(PolicyAction, "/robot_9/policy_action", actions_9.append, 100)
    change_state = node.create_client(ChangeState, "policy/change_state")
    get_state = {ns: node.create_client(GetState, f"/{ns}/policy/get_state") for ns in ("robot_8", "robot_9")}
    set_params = {ns: node.create_client(SetParameters, f"/{ns}/policy/set_parameters") for ns in ("robot_8", "robot_9")}
    change_state_9 = node.create_client(ChangeState, "/robot_9/policy/change_state")
    reload = node.create_client(Trigger, "policy/reload")

    robot = TabletopRobot(image_size=96)
    robot.reset(seed=4)
    sent = {}                                                    # (sec, nanosec) -> frame bytes
    feed = {"on": True, "supervisor": True}
    supervisor_pubs = [node.create_publisher(StepsToGo, f"/{ns}/steps_to_go", 10) for ns in ("robot_8", "robot_9")]

    def publish_frame():
        if not feed["on"]:
            return
        if twists:                                               # closed loop: the sim follows cmd_vel
            t = twists[-1].twist.linear
            robot.step(np.array([t.x, t.y]) / 0.2)
        stamp = node.get_clock().now().to_msg()
        frame = robot.observe()
        sent[(stamp.sec, stamp.nanosec)] = frame.tobytes()
        image_pub.publish(numpy_to_image(frame, stamp))
        image_pub_9.publish(numpy_to_image(frame, stamp))
        if feed["supervisor"]:                                   # what the steps_to_go node publishes per frame
            for pub in supervisor_pubs:
                pub.publish(StepsToGo(expected_steps=10.0))
    node.create_timer(0.04, publish_frame)

    def event(kind, episode_id, pub=event_pub):
        msg = EpisodeEvent(robot="robot_8", episode_id=episode_id, event=kind, instruction=INSTRUCTION)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    def diag(ns):
        for arr in reversed(diags):
            for st in arr.status:
                if st.name == f"/{ns}/policy: policy":
                    return st, {kv.key: kv.value for kv in st.values}
        return None, {}

    def call(client, request, timeout=10.0):
        assert client.wait_for_service(timeout_sec=timeout), client.srv_name
        future = client.call_async(request)
        assert spin_until(ex, future.done, timeout), client.srv_name
        return future.result()

    def set_model_dir(ns, path):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(path))
        return call(set_params[ns], SetParameters.Request(parameters=[Parameter(name="model_dir", value=value)])).results[0]

    def transition(client, tid):
        return call(client, ChangeState.Request(transition=Transition(id=tid))).success

    def ep_actions(ep):
        return [a for a in actions if a.episode_id == ep]

    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    try:
        # -- acting: one action per new frame, stamped with that frame's stamp -----------------
        assert spin_until(ex, lambda: diag("robot_8")[1].get("state") == "active", 40), \
            (procs["good"].poll(), diag("robot_8"))
        event(EpisodeEvent.START, "ep1")
        assert spin_until(ex, lambda: len(ep_actions("ep1")) >= 8, 20), diag("robot_8")
        ep1 = ep_actions("ep1")
        stamps = [(a.header.stamp.sec, a.header.stamp.nanosec) for a in ep1]
        assert all(s in sent for s in stamps), "an action is not stamped with a source frame's stamp"
        assert len(set(stamps)) == len(stamps), "acted twice on the same frame"
        assert [a.step for a in ep1] == list(range(len(ep1)))
        for a in ep1:
            assert a.model_version == "v0001" and len(a.tokens) == 2 and all(0 <= t < 21 for t in a.tokens)
            assert len(a.action) == 2 and all(-1.0 <= x <= 1.0 for x in a.action)
            assert a.log_prob <= 0.0 and a.entropy > 0.0
        moving = [t for t in twists if t.twist.linear.x or t.twist.linear.y]
        assert moving and all(np.hypot(t.twist.linear.x, t.twist.linear.y) <= 0.2 + 1e-6 for t in moving)

        # -- a negative stamp or an unknown event from the network is a counted rejection ------
        from builtin_interfaces.msg import Time as TimeMsg
        bad_frame = numpy_to_image(robot.observe(), TimeMsg(sec=-1, nanosec=0))
        bad_event = EpisodeEvent(robot="robot_8", episode_id="ep1", event=99, instruction=INSTRUCTION)
        bad_stamp_event = EpisodeEvent(robot="robot_8", episode_id="ep1", event=EpisodeEvent.SUCCESS)
        bad_stamp_event.header.stamp = TimeMsg(sec=-5, nanosec=0)
        for _ in range(3):
            image_pub.publish(bad_frame)
            spin_until(ex, lambda: False, 0.05)
        event_pub.publish(bad_event)
        event_pub.publish(bad_stamp_event)
        assert spin_until(ex, lambda: int(diag("robot_8")[1].get("rejected_bad_stamp", 0)) >= 1
                          and int(diag("robot_8")[1].get("rejected_events", 0)) >= 2, 10), diag("robot_8")
        n = len(ep_actions("ep1"))
        assert spin_until(ex, lambda: len(ep_actions("ep1")) >= n + 3, 10), "the episode did not go on"
        assert procs["good"].poll() is None

        # -- no supervisor: with steps_to_go silent the policy holds still, and acts again once it is back
        feed["supervisor"] = False
        assert spin_until(ex, lambda: int(diag("robot_8")[1].get("held_no_supervisor", 0)) >= 3, 10), diag("robot_8")
        n = len(ep_actions("ep1"))
        spin_until(ex, lambda: False, 0.3)
        assert len(ep_actions("ep1")) <= n + 1 and twists[-1].twist.linear.x == 0.0 and twists[-1].twist.linear.y == 0.0
        assert diag("robot_8")[0].level == DiagnosticStatus.WARN
        feed["supervisor"] = True
        assert spin_until(ex, lambda: len(ep_actions("ep1")) >= n + 5, 10), "did not resume with the supervisor back"

        # -- hot-swap mid-run: a new version in watch_dir ---------------------------------------
        n_before = len(actions)
        _new_version(sim_model_dir, watch, "v0002")
        assert spin_until(ex, lambda: any(a.model_version == "v0002" for a in actions), 20), diag("robot_8")
        assert spin_until(ex, lambda: len(actions) >= n_before + 25, 20)
        versions = [a.model_version for a in ep_actions("ep1")]
        first_new = versions.index("v0002")
        assert first_new >= n_before - 1 and set(versions[:first_new]) == {"v0001"}
        assert set(versions[first_new:]) == {"v0002"}, "old and new versions interleaved"
        assert [a.step for a in ep_actions("ep1")] == list(range(len(versions))), "the swap broke the episode"

        # -- a corrupt version is refused, the current one keeps running -----------------------
        _new_version(sim_model_dir, watch, "v0003", corrupt=True)
        (watch / "v0004").mkdir()                                # no manifest: ignored, but said so
        assert spin_until(ex, lambda: int(diag("robot_8")[1].get("versions_rejected", 0)) >= 1, 10), diag("robot_8")
        assert spin_until(ex, lambda: diag("robot_8")[0].level == DiagnosticStatus.WARN, 5), diag("robot_8")
        assert "refused" in diag("robot_8")[0].message
        assert spin_until(ex, lambda: "v0004: no readable manifest.json" in (tmp_path / "policy_good.log").read_text(), 5)
        n = len(actions)
        assert spin_until(ex, lambda: len(actions) >= n + 5, 10)
        assert {a.model_version for a in actions[n:]} == {"v0002"}
        res = call(reload, Trigger.Request())
        assert res.success and "v0002" in res.message

        # -- stale-frame watchdog: frames stop -> zero cmd_vel, no actions ----------------------
        feed["on"] = False
        spin_until(ex, lambda: False, 0.2)
        n_actions, n_twists = len(actions), len(twists)
        assert spin_until(ex, lambda: int(diag("robot_8")[1].get("stale", 0)) >= 3, 10), diag("robot_8")
        assert len(actions) == n_actions
        held = twists[n_twists:]
        assert held and held[-1].twist.linear.x == 0.0 and held[-1].twist.linear.y == 0.0
        feed["on"] = True

        # -- episode end holds still until the next START -------------------------------------
        event(EpisodeEvent.TIMEOUT, "ep1")
        assert spin_until(ex, lambda: int(diag("robot_8")[1].get("held_episode_ended", 0)) >= 5, 10)
        n = len(ep_actions("ep1"))
        spin_until(ex, lambda: False, 0.3)
        assert len(ep_actions("ep1")) == n and twists[-1].twist.linear.x == 0.0
        event(EpisodeEvent.START, "ep2")
        assert spin_until(ex, lambda: len(ep_actions("ep2")) >= 3, 10)
        assert [a.step for a in ep_actions("ep2")][:3] == [0, 1, 2]

        # -- lifecycle deactivate = safe stop: one zero twist, then silence --------------------
        assert transition(change_state, Transition.TRANSITION_DEACTIVATE)
        n_twists, n_actions = len(twists), len(actions)
        spin_until(ex, lambda: False, 0.6)                      # frames keep coming meanwhile
        # at most what was in flight when the reply came (at 20 Hz, 0.6 s would be ~12 more)
        assert len(actions) <= n_actions + 2 and len(twists) <= n_twists + 2
        last = twists[-1]
        assert last.twist.linear.x == 0.0 and last.twist.linear.y == 0.0
        state = call(get_state["robot_8"], GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_INACTIVE

        # -- model_dir parameter = explicit hot-swap (bad dirs are rejected) --------------------
        bad = set_model_dir("robot_8", watch / "nowhere")
        assert not bad.successful and "manifest.json" in bad.reason
        assert set_model_dir("robot_8", sim_model_dir).successful
        assert transition(change_state, Transition.TRANSITION_ACTIVATE)
        assert spin_until(ex, lambda: len(actions) > n_actions + 3 and actions[-1].model_version == "v0001", 15), \
            [a.model_version for a in actions[-5:]]

        # -- a node without a model stays alive, unconfigured, and reports it -------------------
        state = call(get_state["robot_9"], GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert spin_until(ex, lambda: diag("robot_9")[0] is not None, 5)
        st, values = diag("robot_9")
        assert st.level == DiagnosticStatus.ERROR and "configure failed" in st.message and values["state"] == "unconfigured"
        assert procs["missing"].poll() is None
        assert set_model_dir("robot_9", sim_model_dir).successful       # unconfigured: just stored
        assert transition(change_state_9, Transition.TRANSITION_CONFIGURE)
        assert call(get_state["robot_9"], GetState.Request()).current_state.id == State.PRIMARY_STATE_INACTIVE
        # ... and then acts like any other; trigger:=frame: one action per frame, as it arrives
        assert transition(change_state_9, Transition.TRANSITION_ACTIVATE)
        event(EpisodeEvent.START, "ep9", pub=event_pub_9)
        assert spin_until(ex, lambda: len(actions_9) >= 10, 10), diag("robot_9")
        stamps = [(a.header.stamp.sec, a.header.stamp.nanosec) for a in actions_9]
        assert all(s in sent for s in stamps) and len(set(stamps)) == len(stamps)
        assert [a.step for a in actions_9] == list(range(len(actions_9)))
        assert spin_until(ex, lambda: "latency_p50_ms" in diag("robot_9")[1], 5)
        print(f"trigger:=frame diagnostics: {diag('robot_9')[1]}")

        assert spin_until(ex, lambda: int(diag("robot_8")[1].get("swaps", 0)) >= 2, 5), diag("robot_8")
        c = diag("robot_8")[1]
        print(f"policy diagnostics: {c}")
        assert c["model_version"] == "v0001" and int(c["versions_rejected"]) == 1
        assert float(c["latency_p50_ms"]) <= float(c["latency_p99_ms"]) < 1000
    finally:
        ex.shutdown()
        node.destroy_node()


def test_a_policy_node_whose_model_does_not_load_exits_non_zero(python_env, tmp_path):
    """A supervisor (launch respawn, systemd, efm-ros up) must see it; wait_for_model:=true opts out."""
    log = tmp_path / "policy.log"
    proc = _start_policy(python_env, log, "/robot_11", f"model_dir:={tmp_path / 'no_model'}")
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        _stop(proc, log)
    text = log.read_text()
    assert "cannot start" in text and "no_model" in text and "Traceback" not in text


@pytest.mark.parametrize("param, words", [("trusted_keys:=[a.pub,b.pub]", "expecting type 'STRING'"),
                                          ("watch_period_s:=-4.0", "out of range")])
def test_a_wrongly_typed_or_out_of_range_parameter_is_one_clear_line_and_exit_2(python_env, tmp_path, param, words):
    """A YAML list where a string is expected, a value outside the declared range: the node names
    the parameter, what it expected, and exits 2 (no traceback), like any other start-up error."""
    log = tmp_path / "policy.log"
    proc = _start_policy(python_env, log, "/robot_13", param)
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        _stop(proc, log)
    text = log.read_text()
    assert f"parameter {param.split(':=')[0]!r}" in text and words in text and "Traceback" not in text, text[-2000:]


def test_a_policy_with_trusted_keys_runs_only_signed_versions_from_its_root(rclpy_context, python_env, sim_model_dir,
                                                                           tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import SingleThreadedExecutor

    from efm_ros.model.signing import generate_key, sign_model

    private, public = generate_key(tmp_path / "keys")
    root = tmp_path / "models"
    (root / "watch").mkdir(parents=True)
    first = root / "v0001"
    shutil.copytree(sim_model_dir, first)
    sign_model(first, private)
    log = tmp_path / "policy_signed.log"
    proc = _start_policy(python_env, log, "/robot_12", f"model_dir:={first}", f"watch_dir:={root / 'watch'}",
                         "watch_period_s:=0.1", f"trusted_keys:={public}", f"model_root:={root}")
    node = rclpy.create_node("signed_tester", context=rclpy_context)
    diags = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    set_params = node.create_client(SetParameters, "/robot_12/policy/set_parameters")
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)

    def diag():
        return _policy_status(diags, "/robot_12")
    try:
        assert spin_until(ex, lambda: diag().get("model_version") == "v0001", 40), (proc.poll(), diag())
        assert diag()["signature_check"] == "1 trusted keys"
        _new_version(sim_model_dir, root / "watch", "v0002")              # unsigned: refused
        assert spin_until(ex, lambda: int(diag().get("versions_rejected", 0)) >= 1, 10), diag()
        signed = _new_version(sim_model_dir, tmp_path, "v0003")           # signed, then moved into watch_dir
        sign_model(signed, private)
        signed.rename(root / "watch" / "v0003")
        assert spin_until(ex, lambda: diag().get("model_version") == "v0003", 10), diag()
        foreign = _new_version(sim_model_dir, tmp_path, "v0004")          # signed, but outside model_root
        sign_model(foreign, private)
        assert set_params.wait_for_service(timeout_sec=10)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(foreign))
        future = set_params.call_async(SetParameters.Request(parameters=[Parameter(name="model_dir", value=value)]))
        assert spin_until(ex, future.done, 10)
        result = future.result().results[0]
        assert not result.successful and "outside the trusted model root" in result.reason
        assert diag().get("model_version") == "v0003" and proc.poll() is None
    finally:
        ex.shutdown()
        node.destroy_node()
        _stop(proc, log)


def test_a_fleet_command_naming_a_new_version_makes_the_policy_look_for_it_at_once(rclpy_context, python_env,
                                                                                    sim_model_dir, tmp_path):
    """The coordinator waits for every robot's swap after each update: a PRACTISE naming a version
    the node does not act with rescans watch_dir now, not at the next watch_period_s (here 600 s)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

    from efm_ros.msg import FleetCommand

    watch = tmp_path / "watch"
    watch.mkdir()
    log = tmp_path / "policy_fleet.log"
    proc = _start_policy(python_env, log, "/robot_13", f"model_dir:={sim_model_dir}", f"watch_dir:={watch}",
                         "watch_period_s:=600.0", "fleet_command_topic:=/test_fleet/command")
    node = rclpy.create_node("fleet_tester", context=rclpy_context)
    diags = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    command = node.create_publisher(FleetCommand, "/test_fleet/command", latched)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)

    def version():
        return _policy_status(diags, "/robot_13").get("model_version")
    try:
        assert spin_until(ex, lambda: version() is not None, 40), proc.poll()
        first = version()
        _new_version(sim_model_dir, watch, "v0002")
        spin_until(ex, lambda: False, 2.5)
        assert version() == first                                          # no scan for 600 s
        command.publish(FleetCommand(seq=2, command=FleetCommand.PRACTISE, version="v0002"))
        assert spin_until(ex, lambda: version() == "v0002", 10), version()
    finally:
        ex.shutdown()
        node.destroy_node()
        _stop(proc, log)
