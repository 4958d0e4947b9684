"""`colcon build` of a clean copy of the package, and the install tree a lab technician gets.

The build is real: colcon-core + colcon-cmake + colcon-ros (from PyPI) build the package with
ament_cmake against the venv's ament prefix (the ROS 2 Kilted wheels install one there), with
BUILD_TESTING on, exactly as `colcon build` in a workspace does. The install tree is then checked
the way the ROS 2 tools see it (``ament_index_python``: what `ros2 pkg`, `ros2 run` and
`ros2 launch` use), and every node executable is started from it with launch-style arguments and
stopped with SIGINT and with SIGTERM. `ros2 launch` itself is not on any registry reachable here
(README, "What is verified where").
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from efm_ros.graph.description import PACKAGE, describe_graph, node_executables

REPO = Path(__file__).resolve().parents[2]
PY_DIR = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def _package_files() -> list[str]:
    """The package as a clean clone has it: tracked files plus new, not-ignored ones."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """colcon build of a clean copy in a fresh workspace; returns install/ (isolated layout)."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / PACKAGE
    for f in _package_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    venv = Path(sys.prefix)
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    env.pop("PYTHONPATH", None)
    t0 = time.monotonic()
    proc = subprocess.run([str(venv / "bin" / "colcon"), "--log-base", str(ws / "log"), "build",
                           "--base-paths", str(ws / "src"), "--build-base", str(ws / "build"),
                           "--install-base", str(ws / "install"), "--cmake-args", "-DBUILD_TESTING=ON"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    print(f"colcon build: {time.monotonic() - t0:.0f} s")
    return ws / "install"


@pytest.fixture
def installed_env(install, monkeypatch) -> dict[str, str]:
    """This process and its children see the workspace as `source install/setup.bash` shows it."""
    prefix = install / PACKAGE
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{prefix}{os.pathsep}{sys.prefix}")
    env = dict(os.environ, PYTHONPATH=str(prefix / PY_DIR), PYTHONUNBUFFERED="1")
    return env


def test_the_package_is_registered_with_its_executables_and_share(install, installed_env):
    from ament_index_python.packages import get_package_prefix, get_package_share_directory
    from ament_index_python.resources import get_resource

    prefix = Path(get_package_prefix(PACKAGE))
    assert prefix == install / PACKAGE
    get_resource("packages", PACKAGE)  # raises if the ament index does not list it
    # only the five node executables, runnable, with a Python interpreter that exists
    lib = prefix / "lib" / PACKAGE
    assert sorted(p.name for p in lib.iterdir()) == sorted(node_executables())
    for exe in lib.iterdir():
        assert os.access(exe, os.X_OK), exe
        shebang = exe.read_text().splitlines()[0]
        assert shebang.startswith("#!") and Path(shebang[2:].split()[0]).exists(), (exe, shebang)
    share = Path(get_package_share_directory(PACKAGE))
    for rel in ("package.xml", "launch/self_improve.launch.py", "config/efm_ros.yaml", "config/fastdds_shm_big.xml"):
        assert (share / rel).is_file(), rel
    # the Python package is installed once, next to the generated messages
    site = prefix / PY_DIR / PACKAGE
    assert (site / "msg" / "_steps_to_go.py").is_file() and (site / "nodes" / "policy.py").is_file()
    probe = subprocess.run([sys.executable, "-c", "import efm_ros.nodes.policy as p, efm_ros.msg as m; "
                            "print(p.__file__); print(m.StepsToGo.__module__)"],
                           env=installed_env, cwd=install, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[0].startswith(str(site))


def test_the_bundled_model_verifies_from_the_install_tree(install, installed_env):
    from ament_index_python.packages import get_package_share_directory

    from efm_ros.model.manifest import verify_manifest

    model = Path(get_package_share_directory(PACKAGE)) / "models" / "efm_sft"
    manifest = verify_manifest(model)  # sha256 of every file, schema
    assert manifest["model_version"] == "efm_sft"


def _node_names(node) -> set[str]:
    return {f"{ns.rstrip('/')}/{name}" for name, ns in node.get_node_names_and_namespaces()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_every_installed_executable_starts_launch_style_and_stops_cleanly(install, installed_env, tmp_path,
                                                                          rclpy_context, sig):
    """Each node starts from lib/efm_ros with what the launch file gives it (the params file of the
    install tree, the robot namespace, the per-launch overrides), the five work together (the
    policy acts on the simulated camera with the installed model, steps-to-go publishes d), and
    each exits 0 on ``sig``, also when started as a background job of a script (SIGINT ignored)."""
    import rclpy
    from geometry_msgs.msg import TwistStamped

    from efm_ros.msg import StepsToGo

    share = install / PACKAGE / "share" / PACKAGE
    specs = describe_graph(robots=1, sim=True, model=str(share / "models" / "efm_sft"),
                           episodes_dir=str(tmp_path / "episodes"))
    params = share / "config" / "efm_ros.yaml"
    procs, logs = {}, {}
    for s in specs:
        exe = install / PACKAGE / "lib" / PACKAGE / s.executable
        args = s.ros_arguments(params)
        assert args[:5] == ["--ros-args", "-r", f"__node:={s.name}", "--params-file", str(params)]
        assert ["-r", "__ns:=/robot_0"] == args[5:7]
        logs[s.fqn] = open(tmp_path / f"{s.name}.log", "w+")
        procs[s.fqn] = subprocess.Popen([str(exe), *args], env=installed_env, cwd=tmp_path, stdout=logs[s.fqn],
                                        stderr=subprocess.STDOUT,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    watcher = rclpy.create_node("install_tree_watcher", context=rclpy_context)
    seen = {"cmd_vel": 0, "steps_to_go": 0}
    watcher.create_subscription(TwistStamped, "/robot_0/cmd_vel", lambda _m: seen.__setitem__("cmd_vel", seen["cmd_vel"] + 1), 10)
    watcher.create_subscription(StepsToGo, "/robot_0/steps_to_go",
                                lambda _m: seen.__setitem__("steps_to_go", seen["steps_to_go"] + 1), 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(watcher)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not set(procs) <= _node_names(watcher):
            assert all(p.poll() is None for p in procs.values()), {k: p.returncode for k, p in procs.items()}
            time.sleep(0.3)
        assert set(procs) <= _node_names(watcher), f"not up: {set(procs) - _node_names(watcher)}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(seen.values()) < 3:
            executor.spin_once(timeout_sec=0.1)
        assert min(seen.values()) >= 3, f"the installed graph does not run: {seen}"
        for p in procs.values():
            p.send_signal(sig)
        codes = {}
        for fqn, p in procs.items():
            try:
                codes[fqn] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[fqn] = "did not stop"
    finally:
        executor.shutdown()
        watcher.destroy_node()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for fqn, f in logs.items():
        f.seek(0)
        text = f.read()
        f.close()
        assert codes[fqn] == 0, f"{fqn} exited {codes[fqn]} on {sig.name}:\n{text[-3000:]}"
        assert "Traceback" not in text, f"{fqn}:\n{text[-3000:]}"
