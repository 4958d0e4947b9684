"""``efm-ros``: one command line for the parts of the stack.

Each subcommand lives in its own module and exposes ``main(argv: list[str]) -> int``; this file
only dispatches, so ``efm-ros --help`` stays fast (nothing heavy is imported until a command runs).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "collect-demos": ("efm_ros.data.collect", "record scripted demonstrations on a simulated robot (--robot) as rosbags"),
    "import-bags": ("efm_ros.data.foreign", "convert your own rosbag2 recordings into demonstration bags (a topic map)"),
    "read-bag": ("efm_ros.data.inspect", "summarise an episode bag (topics, counts, custom data)"),
    "mark": ("efm_ros.data.marks", "mark recorded policy rollouts as reached / not reached (steps-to-go training data)"),
    "calibrate": ("efm_ros.learn.calibrate", "choose the success detector's (s, k) on marked policy rollouts; export the model with it"),
    "recover-bag": ("efm_ros.data.recover", "rewrite a bag cut by a crash (SIGKILL) as a complete episode"),
    "bench": ("efm_ros.bench", "run a benchmark and print its numbers (sim, collect, model, ...)"),
    "train-sft": ("efm_ros.learn.sft", "Stage 1: train BC + steps-to-go on demonstration bags"),
    "export": ("efm_ros.model.export", "export a trained run to ONNX + manifest.json"),
    "keygen": ("efm_ros.model.signing", "create the key pair that signs model versions (trainer) and verifies them (robots)"),
    "improve": ("efm_ros.learn.improve", "Stage 2: self-improvement (REINFORCE) on the fleet's episode bags"),
    "experiment": ("efm_ros.learn.experiment", "the paper's experiments on the embedded robot (figure3, novel, rm-ablation) and the Stage-2 ladder"),
    "eval": ("efm_ros.learn.evaluate", "evaluate an exported model on a simulated robot (--robot; default the embedded table)"),
    "demo": ("efm_ros.demo", "the embedded self-improvement loop end to end, with a before/after report"),
    "up": ("efm_ros.graph.runner", "run the whole robot graph (fleet) without ros2 launch"),
    "sim-robot": ("efm_ros.nodes.sim_robot", "run the embedded robot as a ROS 2 node"),
    "camera": ("efm_ros.nodes.camera", "run the camera/perception node"),
    "policy": ("efm_ros.nodes.policy", "run the policy node (exported model on ONNX Runtime)"),
    "steps-to-go": ("efm_ros.nodes.steps_to_go", "run the steps-to-go reward/success node"),
    "logger": ("efm_ros.nodes.logger", "run the episode logger node (one rosbag per episode)"),
    "teleop": ("efm_ros.nodes.teleop", "run the record-mode teleop node (teleoperated demonstrations)"),
    "teleop-keyboard": ("efm_ros.nodes.keyboard_teleop", "drive a robot from the terminal and start / mark / discard demonstrations"),
}


def dispatch(prog: str, table: dict[str, tuple[str, str]], argv: list[str], noun: str = "command") -> int:
    """Run ``table[argv[0]]``'s module ``main(argv[1:])``; usage on no/unknown command."""
    width = max(map(len, table))
    usage = "\n".join([f"usage: {prog} <{noun}> [options]", "", f"{noun}s:"]
                      + [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in table.items()]
                      + ["", f"{prog} <{noun}> --help shows its options."])
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] not in table:
        print(f"{prog}: unknown {noun} {argv[0]!r}\n\n{usage}", file=sys.stderr)
        return 2
    return int(importlib.import_module(table[argv[0]][0]).main(argv[1:]) or 0)


def main(argv: list[str] | None = None) -> int:
    return dispatch("efm-ros", COMMANDS, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
