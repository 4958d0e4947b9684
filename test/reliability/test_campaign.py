"""The fault campaign (issue 13), against the real graph: `efm-ros up --robots 1`, one process per
node, respawn on, signed model versions from a trusted root.

1. ≥ 1000 malformed messages on every topic a node subscribes to: 0 crashes (no node restarted),
   rejections counted on /diagnostics, and the graph still commits readable episodes.
2. Forged episode events (START / SUCCESS from a participant that is not the robot's steps_to_go):
   the trainer uses no bag whose episode facts disagree with the recorded StepsToGo stream.
3. Bad model versions in the watched directory (corrupt, unsigned, no manifest, half-written) and
   a foreign model_dir: all refused, counted, the policy keeps acting; a good signed one is taken.
4. SIGKILL of each node type mid-episode: each reaction is the defined one, the node is respawned,
   episodes resume, every committed bag reads, and the killed logger's bag is recovered.
A second test fills a real (tmpfs) disk under the running graph.

The campaign table is printed (pytest -s) and written to $EFM_CAMPAIGN_JSON when set.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from fs_helpers import mounted_tmpfs
from ros_helpers import spin_until

from efm_ros.bench.soak import node_processes
from efm_ros.data import list_episodes, read_episode
from efm_ros.graph.description import default_params_file

NS = "/robot_0"
NODES = ("sim_robot", "camera", "policy", "steps_to_go", "logger")
MAX_STEPS = 30


def _params(tmp_path: Path, **sections) -> Path:
    params = yaml.safe_load(default_params_file().read_text())
    for node, values in sections.items():
        params.setdefault(f"/**/{node}", {}).setdefault("ros__parameters", {}).update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


class Graph:
    """`efm-ros up` as a subprocess, its node processes (by node name) and one observer node."""

    def __init__(self, ctx, args: list[str], env, log: Path):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

        from efm_ros.msg import EpisodeEvent

        self.log_path = log
        self.log = open(log, "w")
        self.up = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robots", "1", *args],
                                   env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.node = rclpy.create_node("campaign", context=ctx)
        self.events, self.diags = [], {}
        qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(EpisodeEvent, f"{NS}/episode_event", self.events.append, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)

    def _on_diag(self, arr) -> None:
        for st in arr.status:
            level = st.level[0] if isinstance(st.level, bytes) else int(st.level)   # a byte in rclpy
            self.diags[st.name] = (level, st.message, {kv.key: kv.value for kv in st.values})

    def diag(self, node: str):
        return next((v for k, v in self.diags.items() if k.startswith(f"{NS}/{node}:")), (None, "", {}))

    def spin(self, seconds: float) -> None:
        spin_until(self.ex, lambda: False, seconds)

    def wait(self, predicate, timeout: float) -> bool:
        return spin_until(self.ex, predicate, timeout)

    def pids(self) -> dict[str, int]:
        return {fqn.rsplit("/", 1)[1]: pid for fqn, pid in node_processes(self.up.pid).items()}

    def ends(self):
        from efm_ros.msg import EpisodeEvent

        kinds = (EpisodeEvent.SUCCESS, EpisodeEvent.TIMEOUT, EpisodeEvent.OPERATOR_STOP, EpisodeEvent.FAULT)
        return [e for e in self.events if e.event in kinds]

    def starts(self) -> list[str]:
        from efm_ros.msg import EpisodeEvent

        return [e.episode_id for e in self.events if e.event == EpisodeEvent.START]

    def running_episode(self) -> str:
        """Id of the episode started last, if it has not ended."""
        from efm_ros.msg import EpisodeEvent

        starts = [e.episode_id for e in self.events if e.event == EpisodeEvent.START]
        ended = {e.episode_id for e in self.ends()}
        return starts[-1] if starts and starts[-1] not in ended else ""

    def close(self) -> str:
        self.ex.shutdown()
        self.node.destroy_node()
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.up.kill()
        self.log.close()
        return self.log_path.read_text()


def _image(stamp_sec=1, nanosec=0, encoding="rgb8", h=96, w=96, step=None, data=None, frame_id=""):
    from sensor_msgs.msg import Image

    msg = Image(height=h, width=w, encoding=encoding, step=w * 3 if step is None else step)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = stamp_sec, nanosec, frame_id
    msg.data = bytes(h * w * 3) if data is None else data
    return msg


def malformed_messages():
    """(topic, message type, QoS, [messages]) for every topic a node of the graph subscribes to."""
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from std_msgs.msg import Float32MultiArray, String

    from efm_ros.msg import EpisodeEvent, PolicyAction, StepsToGo

    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    events = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    now = int(time.time())
    images = [
        _image(stamp_sec=-1),                                              # negative stamp
        _image(stamp_sec=now, nanosec=2_000_000_000),                      # nanosec out of range
        _image(stamp_sec=now, encoding="yuv422_weird"),                    # unknown encoding
        _image(stamp_sec=now, data=bytes(100)),                            # too short for its size
        _image(stamp_sec=now, h=0, w=0, data=b""),                         # empty
        _image(stamp_sec=now, h=100_000, w=100_000, data=bytes(300)),      # claims 30 GB
        _image(stamp_sec=now, step=7),                                     # wrong step
        _image(stamp_sec=now, encoding="mono8"),                           # wrong channel count for the data
        _image(stamp_sec=now, encoding="rgb16", data=bytes(96 * 96 * 6)),  # 16-bit, wrong step
        _image(stamp_sec=now, h=50, w=70),                                 # another size (resized or refused)
        _image(stamp_sec=1),                                               # a stamp far in the past, repeated
        _image(stamp_sec=now, frame_id="x" * 20_000),                      # a 20 kB frame id
    ]
    strings = [String(data=""), String(data="x" * 100_000), String(data="do a backflip"),
               String(data="\u0000\u202e\U0001f600" * 100)]

    def event(**kw):
        e = EpisodeEvent(**{k: v for k, v in kw.items() if k not in ("sec",)})
        e.header.stamp.sec = kw.get("sec", now)
        return e
    bad_events = [event(event=99), event(event=EpisodeEvent.TIMEOUT, outcome=77), event(event=EpisodeEvent.START, sec=-5),
                  event(event=200, episode_id="y" * 50_000), event(event=EpisodeEvent.RESET_DONE, success_threshold=math.nan)]

    def stg(**kw):
        m = StepsToGo(**{k: v for k, v in kw.items() if k != "sec"})
        m.header.stamp.sec = kw.get("sec", now)
        return m
    bad_stg = [stg(expected_steps=math.nan), stg(expected_steps=math.inf, distribution=[math.nan] * 50),
               stg(sec=-3), stg(step=2**32 - 1, distribution=[1.0] * 100_000), stg(reward=-math.inf)]

    def twist(x, y, sec=None):
        m = TwistStamped()
        m.header.stamp.sec = now if sec is None else sec
        m.twist.linear.x, m.twist.linear.y, m.twist.angular.z = x, y, 1e30
        return m
    twists = [twist(math.nan, 0.0), twist(math.inf, -math.inf), twist(1e30, -1e30), twist(0.1, 0.1, sec=-1)]
    arrays = [Float32MultiArray(data=v) for v in ([], [math.nan, 0.0], [0.1], [0.0] * 7, [1e30, -1e30], [0.0] * 100_000)]
    actions = [PolicyAction(action=[math.nan] * 3, tokens=[-5, 10**6], log_prob=math.nan)]
    return [
        ("camera/image_raw", type(images[0]), qos_profile_sensor_data, images),   # camera (and nothing else)
        ("camera/image", type(images[0]), qos_profile_sensor_data, images),       # policy, steps_to_go, logger
        ("instruction", String, latched, strings),                                # policy, steps_to_go
        ("episode_event", EpisodeEvent, events, bad_events),                      # policy, logger
        ("steps_to_go", StepsToGo, 10, bad_stg),                                  # policy, logger
        ("cmd_vel", TwistStamped, qos_profile_sensor_data, twists),               # sim_robot
        ("action", Float32MultiArray, qos_profile_sensor_data, arrays),           # sim_robot
        ("policy_action", PolicyAction, 10, actions),                             # steps_to_go, logger
    ]


def _rejections(values: dict) -> int:
    return sum(int(v) for k, v in values.items() if "rejected" in k and str(v).isdigit())


def _read_all(episodes: Path):
    """Every committed bag reads; returns the episodes (frames dropped by the reader are counted in .dropped)."""
    out = []
    for bag in list_episodes(episodes):
        out.append(read_episode(bag, unmatched_actions="drop"))
    return out


def _new_version(src: Path, where: Path, version: str) -> Path:
    tmp = where / f".{version}.partial"
    shutil.copytree(src, tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["model_version"] = version
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    for sig in tmp.glob("*.sig"):
        sig.unlink()
    tmp.rename(where / version)
    return where / version


def test_fault_campaign_on_the_live_graph(tmp_path, rclpy_context, python_env, sim_model_dir):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_srvs.srv import Trigger

    from efm_ros.learn.improve import Improver
    from efm_ros.model.signing import generate_key, sign_model
    from efm_ros.msg import EpisodeEvent

    private, public = generate_key(tmp_path / "keys")
    root, episodes = tmp_path / "models", tmp_path / "episodes"
    (root / "watch").mkdir(parents=True)
    first = root / "v0001"
    shutil.copytree(sim_model_dir, first)
    sign_model(first, private)
    params = _params(tmp_path,
                     steps_to_go={"max_episode_steps": MAX_STEPS, "reset_timeout_s": 1.0, "reset_retries": 2,
                                  "fault_retry_s": 2.0, "policy_timeout_s": 1.0},
                     policy={"watch_period_s": 0.3, "trusted_keys": str(public), "model_root": str(root)},
                     logger={"min_free_mb": 0.0})
    g = Graph(rclpy_context, ["--model", str(first), "--episodes-dir", str(episodes), "--watch-dir", str(root / "watch"),
                              "--params-file", str(params), "--seed", "3"], python_env, tmp_path / "up.log")
    table = []
    try:
        assert g.wait(lambda: len(list_episodes(episodes) if episodes.exists() else []) >= 2, 120), g.up.poll()
        pids = g.pids()
        assert sorted(pids) == sorted(NODES), pids

        # -- 1. malformed messages on every subscribed topic ------------------------------------------------
        pubs = [(g.node.create_publisher(t, f"{NS}/{topic}", qos), topic, msgs) for topic, t, qos, msgs in malformed_messages()]
        g.spin(1.0)   # discovery
        sent, per_topic = 0, {}
        while sent < 1100:
            for pub, topic, msgs in pubs:
                for m in msgs:
                    pub.publish(m)
                    sent += 1
                    per_topic[topic] = per_topic.get(topic, 0) + 1
                g.spin(0.005)
        clients = [g.node.create_client(Trigger, f"{NS}/reset"), g.node.create_client(Trigger, f"{NS}/policy/reload")]
        for c in clients:
            assert c.wait_for_service(timeout_sec=10)
            for _ in range(3):
                c.call_async(Trigger.Request())
                sent += 1
        for pub, _, _ in pubs:
            g.node.destroy_publisher(pub)   # the latched instruction garbage goes with its publisher
        n_bags = len(list_episodes(episodes))
        g.spin(3.0)
        assert g.pids() == pids, f"a node restarted under fuzzing: {pids} -> {g.pids()}\n{g.log_path.read_text()[-4000:]}"
        counted = {n: _rejections(g.diag(n)[2]) for n in ("camera", "policy", "steps_to_go", "sim_robot")}
        assert all(counted.values()), counted
        assert g.wait(lambda: len(list_episodes(episodes)) >= n_bags + 2, 120), "no episode committed after fuzzing"
        eps = _read_all(episodes)
        dropped = sum(sum(e.dropped.values()) for e in eps)
        table.append({"inputs": f"{sent} malformed messages on {len(per_topic)} topics + 6 service calls",
                      "crashes": 0, "hangs": 0, "data lost": f"0 bags; {dropped} invalid messages skipped by the reader",
                      "rejections counted": counted})

        # -- 2. forged episode events -------------------------------------------------------------------------
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
        forge = g.node.create_publisher(EpisodeEvent, f"{NS}/episode_event", QoSProfile(
            depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))
        assert g.wait(lambda: g.running_episode() != "", 30)
        real = g.running_episode()
        stamp = g.node.get_clock().now().to_msg()
        forged_ids = {real, "robot_0_forged"}
        for ev in (EpisodeEvent(robot="robot_0", episode_id=real, event=EpisodeEvent.SUCCESS,
                                outcome=EpisodeEvent.OUTCOME_SUCCESS, steps=3),
                   EpisodeEvent(robot="robot_0", episode_id="robot_0_forged", event=EpisodeEvent.START,
                                instruction="push the red block to the center"),
                   EpisodeEvent(robot="robot_0", episode_id="robot_0_forged", event=EpisodeEvent.SUCCESS,
                                outcome=EpisodeEvent.OUTCOME_SUCCESS, steps=2)):
            ev.header.stamp = stamp
            forge.publish(ev)
            g.spin(0.3)
        g.node.destroy_publisher(forge)
        n_bags = len(list_episodes(episodes))
        assert g.wait(lambda: len(list_episodes(episodes)) >= n_bags + 2, 60)
        imp = Improver(first, first, tmp_path / "trainer")
        verdicts = {}
        for ep in _read_all(episodes):
            verdict = imp.add_episode(ep)
            if ep.episode_id in forged_ids:
                verdicts[ep.episode_id] = verdict
        assert verdicts and all(v != "used" for v in verdicts.values()), verdicts
        assert imp.counts["episodes_used"] >= 1, imp.counts
        table.append({"inputs": "forged SUCCESS of the running episode; forged START + SUCCESS of a new id",
                      "crashes": 0, "hangs": 0, "data lost": "0", "trainer": verdicts})

        # -- 3. bad model versions ----------------------------------------------------------------------------
        watch = root / "watch"
        corrupt = _new_version(first, root, "v0002")
        sign_model(corrupt, private)
        data = bytearray((corrupt / "policy.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (corrupt / "policy.onnx").write_bytes(bytes(data))
        corrupt.rename(watch / "v0002")                               # signed, then damaged
        _new_version(first, watch, "v0003")                           # unsigned
        nomanifest = watch / "v0004"
        shutil.copytree(first, nomanifest)
        (nomanifest / "manifest.json").unlink()                       # no manifest
        half = watch / ".v0005.partial"
        half.mkdir()
        (half / "policy.onnx").write_bytes(b"partial")                # an export in progress
        assert g.wait(lambda: int(g.diag("policy")[2].get("versions_rejected", 0)) >= 2, 20), g.diag("policy")
        assert g.diag("policy")[2].get("model_version") == "v0001" and g.diag("policy")[0] >= 1
        setp = g.node.create_client(SetParameters, f"{NS}/policy/set_parameters")
        assert setp.wait_for_service(timeout_sec=10)
        fut = setp.call_async(SetParameters.Request(parameters=[Parameter(name="model_dir", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=str(tmp_path / "elsewhere")))]))
        assert g.wait(fut.done, 10) and not fut.result().results[0].successful
        good = _new_version(first, root, "v0006")
        sign_model(good, private)
        good.rename(watch / "v0006")
        assert g.wait(lambda: g.diag("policy")[2].get("model_version") == "v0006", 30), g.diag("policy")
        assert g.pids() == pids
        table.append({"inputs": "versions: corrupt, unsigned, no manifest, half-written; foreign model_dir",
                      "crashes": 0, "hangs": 0, "data lost": "0",
                      "reaction": f"refused ({g.diag('policy')[2].get('versions_rejected')} rejected, WARN), "
                                  "model_dir set refused; the signed v0006 taken"})

        # -- 4. SIGKILL of each node mid-episode ---------------------------------------------------------------
        for name in ("camera", "sim_robot", "policy", "steps_to_go", "logger"):
            assert g.wait(lambda: g.pids().get(name), 60), (name, g.pids())
            n_starts = len(g.starts())
            assert g.wait(lambda: len(g.starts()) > n_starts, 60), f"no episode started before killing {name}"
            # into the episode (MAX_STEPS ticks at 10 Hz); the logger after its first chunks are out
            # (its promise: all but the last reorder_window_s + max_unflushed_s + 0.1 s = 0.7 s)
            g.spin(1.5 if name == "logger" else 0.3)
            open_bags = [p.name for p in (episodes / ".staging").iterdir() if p.is_dir() and "." not in p.name]
            assert len(open_bags) == 1, open_bags          # the logger's bag of the running episode
            killed_episode, old_pid = open_bags[0], g.pids()[name]
            n_ends, n_bags = len(g.ends()), len(list_episodes(episodes))
            t0 = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            assert g.wait(lambda: g.pids().get(name, old_pid) != old_pid, 30), f"{name} was not respawned"
            respawned = time.monotonic() - t0
            assert g.wait(lambda: len(list_episodes(episodes)) >= n_bags + 2, 90), f"no episodes after killing {name}"
            end = next((e for e in g.ends()[n_ends:] if e.episode_id == killed_episode), None)
            reaction = (f"{['START', 'SUCCESS', 'TIMEOUT', 'OPERATOR_STOP', 'RESET_DONE', 'FAULT'][end.event]}: "
                        f"{end.termination_reason}" if end else "no end event")
            bag = episodes / killed_episode
            reaction_of = f"SIGKILL {name} in {killed_episode}: {reaction}; events after: " + \
                str([(e.episode_id, e.event, e.termination_reason) for e in g.ends()[n_ends:]])
            if name == "camera" or name == "sim_robot":
                assert end is not None and (end.event == EpisodeEvent.FAULT and "input lost" in end.termination_reason
                                            or end.event != EpisodeEvent.FAULT), reaction_of
            if name == "policy":
                assert end is not None and end.event == EpisodeEvent.FAULT and \
                    "no policy_action" in end.termination_reason, reaction_of
            if name == "steps_to_go":   # nobody ends that episode; its bag is closed as not terminated
                assert g.wait(lambda: bag.exists(), 30), sorted(p.name for p in episodes.iterdir())
                reaction = f"episode never ended; bag committed, terminated={read_episode(bag, unmatched_actions='drop').custom_data.get('terminated')}"
            if name == "logger":        # the respawned logger recovered the bag it was writing
                assert g.wait(lambda: bag.exists(), 30), sorted(p.name for p in (episodes / ".staging").iterdir())
                assert read_episode(bag, unmatched_actions="drop").custom_data.get("recovered") == "true"
                reaction += "; the respawned logger recovered the killed bag"
            if bag.exists():
                read_episode(bag, unmatched_actions="drop")
            table.append({"inputs": f"SIGKILL {name} mid-episode", "crashes": f"1 (the kill), respawned in {respawned:.1f} s",
                          "hangs": 0, "data lost": "0 committed bags", "reaction": reaction})
        eps = _read_all(episodes)
        assert len(eps) >= 10
        assert g.up.poll() is None
    finally:
        log = g.close()
        print(json.dumps(table, indent=1))
        if os.environ.get("EFM_CAMPAIGN_JSON"):
            Path(os.environ["EFM_CAMPAIGN_JSON"]).write_text(json.dumps(table, indent=1))
    assert g.up.returncode == 0, log[-4000:]


def test_a_full_disk_under_the_running_graph(tmp_path, rclpy_context, python_env, sim_model_dir):
    """A 3 MB disk: the logger stops recording with an ERROR, no node dies, the bags committed before
    the disk filled read completely."""
    params = _params(tmp_path, steps_to_go={"max_episode_steps": MAX_STEPS}, logger={"min_free_mb": 0.2})
    with mounted_tmpfs(tmp_path / "disk", "size=3m") as disk:
        g = Graph(rclpy_context, ["--model", str(sim_model_dir), "--episodes-dir", str(disk), "--params-file", str(params)],
                  python_env, tmp_path / "up.log")
        try:
            assert g.wait(lambda: g.diag("logger")[0] == 2, 180), g.diag("logger")
            pids = g.pids()
            level, message, values = g.diag("logger")
            assert "no space left" in message or "disk full" in message, message
            g.spin(3.0)
            assert g.pids() == pids and sorted(pids) == sorted(NODES), (pids, g.pids())
            eps = _read_all(disk)
            assert eps, "nothing was committed before the disk filled"
            print(f"full disk: {len(eps)} bags committed and readable; logger: {message}")
        finally:
            log = g.close()
        assert g.up.returncode == 0, log[-4000:]
