"""``efm-ros bench <name>``: benchmarks that print their numbers.

Each benchmark is a module here with ``main(argv) -> int``; it is imported only when run.
"""
from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    "sim": ("efm_ros.bench.sim", "embedded robot: step/render rates on one core, demonstrator success"),
    "collect": ("efm_ros.bench.collect", "demonstration collection: episodes/min, bag size, read-back"),
    "model": ("efm_ros.bench.model", "model: training throughput, ONNX Runtime latency"),
    "graph": ("efm_ros.bench.graph", "live graph: camera->action / camera->reward latency with 1, 4, 8 robots"),
    "logger": ("efm_ros.bench.logger", "episode logger: 4 robots x 30 Hz VGA, published vs recorded, MB/s, CPU"),
}


def _usage() -> str:
    width = max(map(len, BENCHMARKS))
    lines = ["usage: efm-ros bench <name> [options]", "", "benchmarks:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in BENCHMARKS.items()]
    lines += ["", "efm-ros bench <name> --help shows a benchmark's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"efm-ros bench: unknown benchmark {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHMARKS[name][0]).main(rest) or 0)
