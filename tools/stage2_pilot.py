"""Stage-2 pilot (docs/results.md): in-process practice from an exported Stage-1 model on Block2Block,
ground-truth success before/after on the same 100 evaluation seeds (eval seed 0, as in Stage 1).

    .venv/bin/python tools/stage2_pilot.py MODEL_DIR EPISODES LR OUT_DIR
    .venv/bin/python tools/stage2_pilot.py runs/stage1/v2/models/n800_s1 200 1e-4 runs/stage2_pilot
"""
import json, sys, time
from pathlib import Path
from efm_ros.learn.evaluate import evaluate_policy
from efm_ros.learn.improve import ImproveConfig
from efm_ros.learn.practice import practise_sim



def main():
    model, budget, lr, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    t0 = time.time()
    res = practise_sim(model, model, out, episode_budget=budget, config=ImproveConfig(lr=lr), workers=1, progress=False)
    print("practice", res.episodes, "episodes", res.iterations, "iterations", round(res.seconds), "s", flush=True)
    for r in res.history:
        print({k: r.get(k) for k in ("iteration", "episodes", "gt_success_rate", "detector_success_rate", "episode_length", "mean_return", "loss")}, flush=True)
    rows = {}
    for name, path in (("before", model), ("after (best by detector)", res.best_version_dir), ("after (last)", res.final_version_dir)):
        r = evaluate_policy(path, 100, seed=0, families=["block2block"], progress=False)["ground_truth"]
        rows[name] = {"version_dir": str(path), "success": r["success_rate"], "ci95": r["ci95"], "mean_length": r["mean_length"]}
        print(name, rows[name], flush=True)
    (out / "pilot.json").write_text(json.dumps({"model": model, "budget": budget, "lr": lr, "rows": rows,
                                                 "history": res.history, "seconds": time.time() - t0}, indent=1))


if __name__ == "__main__":
    main()
