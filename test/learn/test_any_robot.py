"""Any robot through every command (issue 11): the README's example backend, and the second
embedded robot (efm_ros.sim.lift: 3-D motion, a gripper, an oblique camera, 4-D actions) through
collect-demos -> train-sft -> export -> eval -> in-process practice -> the live graph, at tiny scale."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from efm_ros.data import list_episodes, read_episode, read_metadata
from ros_helpers import killed_on_exit, signal_and_read

LIFT = "efm_ros.sim.lift:LiftRobot"
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def readme_backend_source() -> str:
    """The python block of the README's "Bring your own robot" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Bring your own robot"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_backend_is_demonstrated_by_collect_demos(tmp_path, monkeypatch, capsys):
    from efm_ros.data.collect import main as collect

    (tmp_path / "my_robot.py").write_text(readme_backend_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "dots"
    assert collect(["--robot", "my_robot:DotRobot", "--robot-args", '{"control_rate_hz": 5}', "--episodes", "3",
                    "--out", str(out), "--seed", "0", "--image-size", "32", "--workers", "1", "--no-progress"]) == 0
    episodes = [read_episode(p) for p in list_episodes(out)]
    assert len(episodes) == 3
    for ep in episodes:
        assert ep.instruction in ("go to the red target", "go to the blue target")
        assert ep.actions.shape[1] == 2 and ep.frames.shape[1:] == (32, 32, 3)
        assert ep.custom_data["robot_backend"] == "my_robot:DotRobot"
        assert json.loads(ep.custom_data["robot_args"])["control_rate_hz"] == 5
    assert "my_robot:DotRobot" in capsys.readouterr().out
    # --expert: any factory called with the robot (here the README's Expert class itself)
    assert collect(["--robot", "my_robot:DotRobot", "--expert", "my_robot:Expert", "--episodes", "1", "--out",
                    str(tmp_path / "dots2"), "--seed", "0", "--image-size", "32", "--workers", "1", "--no-progress"]) == 0
    assert read_episode(list_episodes(tmp_path / "dots2")[0]).custom_data["expert"] == "my_robot:Expert"


def test_robot_options_are_refused_with_a_clear_error(tmp_path, capsys):
    from efm_ros.data.collect import main as collect

    base = ["--episodes", "1", "--out", str(tmp_path / "x"), "--seed", "0", "--workers", "1", "--no-progress"]
    assert collect([*base, "--robot", "no_such_pkg.mod:Robot"]) == 2
    assert "cannot load 'no_such_pkg.mod:Robot'" in capsys.readouterr().err
    assert collect([*base, "--robot-args", "[1, 2]"]) == 2
    assert "JSON object" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["collect-demos", "train-sft", "eval", "up"])
def test_every_command_shows_the_robot_options(command, python_env):
    out = subprocess.run([sys.executable, "-m", "efm_ros.cli", command, "--help"], env=python_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--robot" in out.stdout and "--robot-args" in out.stdout, out.stdout


@pytest.fixture(scope="module")
def lift_model(tmp_path_factory):
    """collect-demos -> train-sft -> export on the lift robot, at tiny scale."""
    from efm_ros.data.collect import main as collect
    from efm_ros.learn.sft import main as train_sft
    from efm_ros.model.export import main as export

    root = tmp_path_factory.mktemp("lift")
    demos, run, model = root / "demos", root / "run", root / "model"
    assert collect(["--robot", LIFT, "--episodes", "6", "--out", str(demos), "--seed", "0", "--workers", "1",
                    "--no-progress"]) == 0
    assert train_sft(["--demos", str(demos), "--out", str(run), "--steps", "20", "--eval-every", "10",
                      "--calibration-failures", "4", "--threads", "1", "--no-progress"]) == 0
    assert export([str(run), "--out", str(model)]) == 0
    return demos, run, model


def test_lift_demonstrations_train_a_four_dimensional_model(lift_model):
    from efm_ros.model.runtime import load_model
    from efm_ros.sim.lift import LiftRobot

    demos, run, model = lift_model
    ep = read_episode(list_episodes(demos)[0])
    assert ep.actions.shape[1] == 4 and ep.tokens.shape[1] == 4
    assert read_metadata(list_episodes(demos)[0])["custom_data"]["robot_backend"] == LIFT
    assert json.loads((run / "config.json").read_text())["action_dims"] == 4   # sized from the demonstrations
    meta = json.loads((run / "train_meta.json").read_text())
    every = LiftRobot(image_size=32).instructions()
    assert set(every) <= set(meta["instructions"])            # the robot's instructions, not the table's
    assert not any("block" in t for t in meta["instructions"])
    onnx = load_model(model)
    assert onnx.action_bins.dims == 4
    frame = LiftRobot(image_size=onnx.image_size, seed=0).observe()
    action, tokens, _, _ = onnx.act(frame, frame, every[0], np.random.default_rng(0))
    assert np.asarray(action).shape == (4,) and np.asarray(tokens).shape == (4,)


def test_lift_model_is_evaluated_on_the_lift_robot(lift_model, tmp_path, capsys):
    from efm_ros.learn.evaluate import main as evaluate

    _, _, model = lift_model
    out = tmp_path / "eval"
    assert evaluate(["--model", str(model), "--robot", LIFT, "--episodes", "2", "--max-steps", "6", "--out", str(out),
                     "--no-plots", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["robot"] == LIFT and summary["config"]["episodes"] == 2
    # the table is refused: the model acts in 4 dimensions, the table in 2
    assert evaluate(["--model", str(model), "--episodes", "1", "--out", str(tmp_path / "e2"), "--quiet"]) == 2
    assert "4 dimensions" in capsys.readouterr().err


def test_lift_model_practises_in_process(lift_model, tmp_path):
    from efm_ros.learn.improve import ImproveConfig
    from efm_ros.learn.practice import practise_sim
    from efm_ros.model.runtime import load_model

    _, _, model = lift_model
    res = practise_sim(model, model, tmp_path / "si", episode_budget=6, robot=LIFT, workers=1, max_steps=8,
                       config=ImproveConfig(updates=2, batch_size=16), progress=False)
    assert res.iterations >= 1
    assert load_model(res.final_version_dir).action_bins.dims == 4
    assert all(h["episodes"] > 0 for h in res.history)


def test_lift_robot_runs_in_the_live_graph(lift_model, tmp_path, python_env):
    """`efm-ros up --robot ...lift`: the sim node hosts the lift robot, the policy node commands 4-D
    actions on cmd_vel + gripper_cmd, and the logger's bags hold them."""
    from efm_ros.graph.description import default_params_file
    from efm_ros.sim.lift import LiftRobot

    _, _, model = lift_model
    params = yaml.safe_load(default_params_file().read_text())
    params.setdefault("/**/steps_to_go", {}).setdefault("ros__parameters", {})["max_episode_steps"] = 6
    params.setdefault("/**/logger", {}).setdefault("ros__parameters", {})["min_free_mb"] = 0.0
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = tmp_path / "episodes"
    up = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robot", LIFT, "--model", str(model),
                           "--episodes-dir", str(out), "--params-file", str(params_file)],
                          env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def acted() -> list:
        """The episodes so far in which the policy acted (the first may end before a slow policy
        node has loaded its model: it has frames but no actions)."""
        bags = list_episodes(out) if out.exists() else []
        # not the one cut by the SIGTERM below (possibly before its first frame: no camera topic at all)
        eps = [read_episode(b) for b in bags if read_metadata(b)["custom_data"].get("terminated") != "false"]
        return [ep for ep in eps if ep.num_steps >= 1]

    with killed_on_exit(up):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not acted():
            time.sleep(0.5)
        log = signal_and_read(up, timeout=60)
    episodes = acted()
    assert episodes, log[-4000:]
    ep = episodes[0]
    assert ep.actions.ndim == 2 and ep.actions.shape[1] == 4
    assert ep.instruction in LiftRobot(image_size=32).instructions()
    topics = set(ep.topic_counts)
    assert any(t.endswith("/gripper_cmd") for t in topics), topics
