"""Time one Stage-2 version export with and without reusing the frozen reward graph (issue 12).

    .venv/bin/python tools/export_time.py [MODEL_DIR]      # default models/efm_sft

Exports MODEL_DIR's policy twice each way (alternating): the full export (both ONNX graphs, both
parity checks), ``export_model(reward_from=MODEL_DIR)`` (the frozen reward graph copied after its
sha256 check), and that plus ``policy_template`` (the policy graph traced once, its weights
refreshed; what ``Improver.publish`` does). Each result is loaded back with ``load_model``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from efm_ros.model.export import PolicyGraphTemplate, export_model, load_model_checkpoints
from efm_ros.model.runtime import load_model
from efm_ros.model.text import InstructionTable


def main(argv: list[str]) -> int:
    src = Path(argv[0] if argv else "models/efm_sft")
    policy, reward = load_model_checkpoints(src)
    m = json.loads((src / "manifest.json").read_text())
    kw = dict(reward_model=reward, instructions=InstructionTable.load(src / m["instructions"]["file"]),
              success_threshold=m["success"]["threshold_steps"], success_k=m["success"]["consecutive"],
              control_rate_hz=m["control_rate_hz"], data_hash="timing", metrics={})
    t0 = time.perf_counter()
    template = PolicyGraphTemplate(policy)
    print(f"{'policy graph template (once, at start-up)':42s} {time.perf_counter() - t0:6.2f} s")
    runs = (("full export (both graphs, both parities)", {}), ("frozen reward copied", {"reward_from": src}),
            ("... and policy weights refreshed", {"reward_from": src, "policy_template": template})) * 2
    with tempfile.TemporaryDirectory() as tmp:
        for k, (label, extra) in enumerate(runs):
            out = Path(tmp) / f"v{k:04d}"
            t0 = time.perf_counter()
            manifest = export_model(policy, out, **kw, **extra)
            seconds = time.perf_counter() - t0
            load_model(out)
            same = (out / "reward.onnx").read_bytes() == (src / "reward.onnx").read_bytes()
            print(f"{label:42s} {seconds:6.2f} s  parity {max(manifest['export']['parity_max_abs_diff'].values()):.1e}  "
                  f"reward.onnx identical to the frozen model's: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
