"""``host_node``: several nodes of the graph in one process, each with its own ROS arguments.

    lib/efm_ros/host_node --node efm_ros.nodes.policy:PolicyNode --ros-args -r __node:=policy -r __ns:=/robot_0 ... \\
                          --node efm_ros.nodes.policy:PolicyNode --ros-args -r __node:=policy -r __ns:=/robot_1 ...

The ``per-type`` layout of ``efm-ros up`` (and the launch file's ``processes:=per-type``) starts one
host per node *type* serving every robot namespace: 8 robots are 5 processes instead of 40, each
node keeps its own name, namespace, parameters and remappings (``--ros-args`` after each
``--node``, exactly :meth:`NodeSpec.ros_arguments`), and they share one executor
(:func:`efm_ros.nodes.common.executor_lanes`). The node split of the design stays: a camera, a
policy, a steps-to-go and a logger node per robot. Stopping (SIGINT / SIGTERM) closes every node,
so each logger commits its bag.
"""
from __future__ import annotations

import importlib
import sys


def parse(argv: list[str]) -> list[tuple[str, list[str]]]:
    """``--node ENTRY [--ros-args ...] --node ENTRY ...`` -> [(entry, ros arguments), ...]."""
    if not argv or argv[0] != "--node":
        raise ValueError("usage: host_node --node module:Class [--ros-args ...] [--node ...]")
    nodes: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(argv):
        if argv[i] != "--node" or i + 1 >= len(argv) or ":" not in argv[i + 1]:
            raise ValueError(f"expected --node module:Class at argument {i + 1}, got {argv[i:i + 2]}")
        j = i + 2
        while j < len(argv) and argv[j] != "--node":
            j += 1
        nodes.append((argv[i + 1], argv[i + 2:j]))
        i = j
    return nodes


def host_arguments(specs, params_file) -> list[str]:
    """The command line that hosts ``specs`` (NodeSpecs) in one process."""
    out: list[str] = []
    for s in specs:
        out += ["--node", s.entry, *s.ros_arguments(params_file)]
    return out


def node_class(entry: str):
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    from efm_ros.nodes.common import spin_nodes

    try:
        nodes = parse(sys.argv[1:] if argv is None else argv)
        classes = [node_class(entry) for entry, _ in nodes]
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"host_node: {exc}", file=sys.stderr)
        return 2
    makers = [lambda cls=cls, args=args: cls(cli_args=args) for cls, (_, args) in zip(classes, nodes)]
    return spin_nodes(makers, [sys.argv[0]], name="host_node")


if __name__ == "__main__":
    raise SystemExit(main())
