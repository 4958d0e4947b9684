"""`efm-ros up` stops on SIGTERM exactly as on SIGINT: every node of the graph exits cleanly (no
orphan processes), also when `up` was started as a background job of a script, which enters with
SIGINT ignored (README, "Stopping a scripted launch")."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from efm_ros.graph.description import describe_graph
from ros_helpers import killed_on_exit, signal_and_read


def node_executables() -> list[str]:
    """The executables `up --robots 1` starts (practice mode)."""
    return [s.executable for s in describe_graph(robots=1, sim=True)]


def kill_and_see_it_restarted(up: subprocess.Popen, processes, key: str, count: int,
                              settle: float = 2.0) -> tuple[dict, dict]:
    """Wait until `up` runs ``count`` processes (``processes()``: key -> pid) and ``settle`` s more,
    SIGKILL the one named ``key`` (a crash), wait for its replacement; assert the others kept
    running. (before, after)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(processes()) < count:
        time.sleep(0.2)
    before = processes()
    assert len(before) == count and key in before, before
    time.sleep(settle)
    psutil.Process(before[key]).kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and processes().get(key) in (None, before[key]):
        time.sleep(0.2)
    after = processes()
    assert after.get(key) not in (None, before[key]), after
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}, \
        "a healthy process was stopped"
    return before, after


@pytest.mark.parametrize("sig,processes", [(signal.SIGINT, "per-node"), (signal.SIGTERM, "per-node"),
                                           (signal.SIGTERM, "per-type"), (signal.SIGTERM, "per-robot")],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-per-type", "SIGTERM-per-robot"])
def test_up_stops_every_node_on_the_signal(sig, processes, tmp_path, python_env, sim_model_dir):
    expected = {"per-node": sorted(node_executables()), "per-type": ["host_node"] * len(node_executables()),
                "per-robot": ["host_node"]}[processes]      # one robot: one host with its five nodes
    with killed_on_exit(subprocess.Popen(
            [sys.executable, "-m", "efm_ros.cli", "up", "--robots", "1", "--model", str(sim_model_dir),
             "--episodes-dir", str(tmp_path / "episodes"), "--processes", processes],
            env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))) as up:
        deadline = time.monotonic() + 60
        children = []
        while time.monotonic() < deadline:
            children = psutil.Process(up.pid).children()
            if len(children) == len(expected):
                break
            time.sleep(0.2)
        names = sorted(psutil.Process(c.pid).cmdline()[1].rsplit("/", 1)[-1] for c in children)
        assert names == expected, names  # the installed lib/efm_ros/<node> executables (or the hosts)
        time.sleep(3.0)  # the nodes are up and running
        out = signal_and_read(up, sig)
    assert up.returncode == 0, out[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"orphans after {sig.name}: {[p.pid for p in alive]}"
    assert "Traceback" not in out, out[-3000:]


def test_up_restarts_a_killed_node_and_keeps_the_others(tmp_path, python_env, sim_model_dir):
    up = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robots", "1", "--model", str(sim_model_dir),
                           "--episodes-dir", str(tmp_path / "episodes")],
                          env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def children() -> dict[str, int]:
        out = {}
        for c in psutil.Process(up.pid).children():
            try:
                out[c.cmdline()[1].rsplit("/", 1)[-1]] = c.pid
            except (psutil.NoSuchProcess, IndexError):
                pass
        return out

    with killed_on_exit(up):
        before, _ = kill_and_see_it_restarted(up, children, "camera_node", len(node_executables()))
        assert sorted(before) == sorted(node_executables())
        assert up.poll() is None
        out = signal_and_read(up)
    assert up.returncode == 0, out[-3000:]
    assert "/robot_0/camera exited with -9; restarting it" in out and "restarts /robot_0/camera 1" in out, out[-3000:]


def test_up_per_type_restarts_a_killed_host_and_its_robots_act_again(tmp_path, python_env, sim_model_dir):
    """processes:=per-type: SIGKILL of the policy host (every robot's policy node) restarts that host
    alone; both robots' policies come back active, and the other hosts keep running."""
    up = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robots", "2", "--model", str(sim_model_dir),
                           "--episodes-dir", str(tmp_path / "episodes"), "--processes", "per-type"],
                          env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def hosts() -> dict[str, int]:
        out = {}
        for c in psutil.Process(up.pid).children():
            try:
                cmd = c.cmdline()
                out[cmd[cmd.index("--node") + 1]] = c.pid
            except (psutil.NoSuchProcess, ValueError, IndexError):
                pass
        return out

    policy = "efm_ros.nodes.policy:PolicyNode"
    with killed_on_exit(up):
        kill_and_see_it_restarted(up, hosts, policy, len(node_executables()), settle=3.0)   # both robots' policies
        time.sleep(5.0)
        out = signal_and_read(up)
    assert up.returncode == 0, out[-3000:]
    assert "policy_node x2 exited with -9; restarting it" in out, out[-3000:]
    for robot in ("robot_0", "robot_1"):
        assert out.count(f"[{robot}.policy]: active") >= 2, out[-3000:]    # before the kill and after it
