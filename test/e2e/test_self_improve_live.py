"""Stage 2 on the live graph, at a tiny scale: `efm-ros demo` runs the fleet (2 simulated robots,
every node) and `efm-ros improve` beside it. The trainer turns the fleet's first episode bags into a
new policy version, the running policy nodes hot-swap to it, later actions carry it, and the demo
reports the new version's ground-truth success next to the Stage-1 model's, with 95 % intervals.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_short_improve_run_on_the_live_graph(tmp_path, python_env):
    from efm_ros.data.reader import list_episodes, read_episode

    model = Path(os.environ.get("EFM_E2E_MODEL", REPO / "models" / "efm_sft"))
    if not (model / "manifest.json").exists():
        pytest.fail(f"the bundled Stage-1 model is missing: {model}")
    run = tmp_path / "demo"
    cmd = [sys.executable, "-m", "efm_ros.cli", "demo", "--model", str(model), "--robots", "2", "--minutes", "1.2",
           "--eval-episodes", "4", "--out", str(run), "--improve-args", "--updates 2 --batch-size 16 --poll-s 0.5"]
    res = subprocess.run(cmd, env=python_env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]

    # the trainer made at least one new version from the fleet's bags
    versions = sorted((run / "si" / "versions").iterdir())
    assert versions, (run / "improve.log").read_text()[-3000:]
    first_new = json.loads((versions[0] / "manifest.json").read_text())["model_version"]
    stage1 = json.loads((model / "manifest.json").read_text())["model_version"]

    # the policy nodes switched to it while running: later actions carry it, earlier ones the old one
    eps = sorted((read_episode(p, unmatched_actions="drop") for p in list_episodes(run / "episodes")),
                 key=lambda e: int(e.frame_stamps_ns[0]))
    seen = [v for e in eps for v in e.policy_versions]
    assert stage1 in seen and first_new in seen, sorted(set(seen))
    assert seen.index(stage1) < seen.index(first_new)
    for robot in {e.robot for e in eps}:
        vs = [v for e in eps if e.robot == robot for v in e.policy_versions]
        if first_new in vs:  # never back to the old version after the swap
            assert stage1 not in vs[vs.index(first_new):]

    # the report: ground-truth success of both, with confidence intervals
    report = (run / "report.md").read_text()
    assert "Stage 1 (SFT)" in report and "best by detector" in report and "95% CI" in report
    assert (run / "report.png").stat().st_size > 1000
    print(report)
