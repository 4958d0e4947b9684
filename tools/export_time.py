"""Time one Stage-2 version export with and without reusing the frozen reward graph (issue 12).

    .venv/bin/python tools/export_time.py [MODEL_DIR]      # default models/efm_sft
"""
import tempfile, time, json
from pathlib import Path
from efm_ros.model.export import export_model, load_model_checkpoints
from efm_ros.model.runtime import load_model
from efm_ros.model.text import InstructionTable
import sys
src = Path(sys.argv[1] if len(sys.argv) > 1 else "models/efm_sft")
pol, rew = load_model_checkpoints(src)
m = json.loads((src / "manifest.json").read_text())
inst = InstructionTable.load(src / m["instructions"]["file"])
kw = dict(reward_model=rew, instructions=inst, success_threshold=m["success"]["threshold_steps"], success_k=m["success"]["consecutive"],
          control_rate_hz=m["control_rate_hz"], data_hash="t", metrics={})
with tempfile.TemporaryDirectory() as d:
    for label, extra in (("full export (both graphs, both parities)", {}), ("frozen reward copied", {"reward_from": src})) * 2:
        out = Path(d) / f"v{time.time_ns()}"
        t0 = time.perf_counter(); man = export_model(pol, out, **kw, **extra); dt = time.perf_counter() - t0
        lm = load_model(out)
        print(f"{label:42s} {dt:6.2f} s  parity {max(man['export']['parity_max_abs_diff'].values()):.1e}  "
              f"reward.onnx same file: {(out/'reward.onnx').read_bytes() == (src/'reward.onnx').read_bytes()}")
