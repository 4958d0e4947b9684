"""Smoke test of ``efm-ros bench sim`` with a tiny budget, and of the bench dispatcher."""
from __future__ import annotations

import json

from efm_ros import bench
from efm_ros.bench import sim


def test_bench_sim_prints_its_table_and_json(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert sim.main(["--episodes", "3", "--seconds", "0.05", "--image-size", "32", "--no-pin", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("step + render", "step only", "render only (32x32)", "demonstrator success (3 episodes)",
                "demo length", "target of 2,000/s"):
        assert row in printed
    numbers = json.loads(out.read_text())
    assert numbers["episodes"] == 3 and 0.0 <= numbers["demo_success_rate"] <= 1.0
    assert min(numbers["step_render_per_s"], numbers["step_per_s"], numbers["render_per_s"]) > 0


def test_bench_dispatcher(capsys):
    assert bench.main(["--help"]) == 0
    assert "sim" in capsys.readouterr().out
    assert bench.main(["no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
