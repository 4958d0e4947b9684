"""Stage 2 from one Stage-1 model with a larger practice budget than the Figure-3 protocol allows.

    .venv/bin/python tools/si_budget.py MODEL_DIR EPISODES OUT [SEED]

Practises Block2Block on the embedded robot (efm_ros.learn.practice, the paper's hyper-parameters,
the model's own frozen reward model), then evaluates the Stage-1 model, the version chosen without
ground truth (best.json) and the last version on the Figure-3 evaluation seeds. Writes OUT/results.json.
"""
import json
import sys
from pathlib import Path

from efm_ros.learn.experiment import _evaluate, _practise


def main() -> None:
    model, budget, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    si = _practise(model, model, out / "si", budget, seed, 2, {"families": ["block2block"]})
    res = {"budget": budget, "seed": seed, "practice": si, "before": _evaluate(model, 100, 2, families=["block2block"])}
    if si["best"]:
        res["best"] = _evaluate(Path(si["best"]), 100, 2, families=["block2block"])
    res["final"] = _evaluate(Path(si["final"]), 100, 2, families=["block2block"])
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v["success"] for k, v in res.items() if isinstance(v, dict) and "success" in v}))


if __name__ == "__main__":  # the practice workers are spawned processes
    main()
