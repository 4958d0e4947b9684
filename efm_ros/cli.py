"""``efm-ros``: one command line for the parts of the stack.

Each subcommand lives in its own module and exposes ``main(argv: list[str]) -> int``; this file
only dispatches, so ``efm-ros --help`` stays fast (nothing heavy is imported until a command runs).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "collect-demos": ("efm_ros.data.collect", "record scripted demonstrations on the embedded robot as rosbags"),
    "read-bag": ("efm_ros.data.inspect", "summarise an episode bag (topics, counts, custom data)"),
    "recover-bag": ("efm_ros.data.recover", "rewrite a bag cut by a crash (SIGKILL) as a complete episode"),
    "bench": ("efm_ros.bench", "run a benchmark and print its numbers (sim, collect, model, ...)"),
    "train-sft": ("efm_ros.learn.sft", "Stage 1: train BC + steps-to-go on demonstration bags"),
    "export": ("efm_ros.model.export", "export a trained run to ONNX + manifest.json"),
    "improve": ("efm_ros.learn.improve", "Stage 2: self-improvement (REINFORCE) on the fleet's episode bags"),
    "experiment": ("efm_ros.learn.experiment", "the paper's experiments on the embedded robot (figure3, novel, rm-ablation)"),
    "eval": ("efm_ros.learn.evaluate", "evaluate an exported model on the embedded robot"),
    "demo": ("efm_ros.demo", "the embedded self-improvement loop end to end, with a before/after report"),
    "up": ("efm_ros.graph.runner", "run the whole robot graph (fleet) without ros2 launch"),
    "sim-robot": ("efm_ros.nodes.sim_robot", "run the embedded robot as a ROS 2 node"),
    "camera": ("efm_ros.nodes.camera", "run the camera/perception node"),
    "policy": ("efm_ros.nodes.policy", "run the policy node (exported model on ONNX Runtime)"),
    "steps-to-go": ("efm_ros.nodes.steps_to_go", "run the steps-to-go reward/success node"),
    "logger": ("efm_ros.nodes.logger", "run the episode logger node (one rosbag per episode)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: efm-ros <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "efm-ros <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"efm-ros: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
