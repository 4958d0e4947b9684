"""``efm-ros bench <name>``: benchmarks that print their numbers.

Each benchmark is a module here with ``main(argv) -> int``; it is imported only when run.
"""
from __future__ import annotations

import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    "sim": ("efm_ros.bench.sim", "embedded robot: step/render rates on one core, demonstrator success"),
    "collect": ("efm_ros.bench.collect", "demonstration collection: episodes/min, bag size, read-back"),
    "model": ("efm_ros.bench.model", "model: training throughput, ONNX Runtime latency"),
    "graph": ("efm_ros.bench.graph", "live graph: camera->action / camera->reward latency with 1, 4, 8 robots"),
    "soak": ("efm_ros.bench.soak", "long run of the live graph: episodes, misaligned, losses, RSS growth per node"),
    "logger": ("efm_ros.bench.logger", "episode logger: 4 robots x 30 Hz VGA, published vs recorded, MB/s, CPU"),
}


def main(argv: list[str] | None = None) -> int:
    from efm_ros.cli import dispatch

    return dispatch("efm-ros bench", BENCHMARKS, list(sys.argv[1:] if argv is None else argv), noun="benchmark")
