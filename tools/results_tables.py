"""Markdown tables for docs/results.md from `efm-ros experiment` outputs (no re-computation).

    .venv/bin/python tools/results_tables.py runs/fig3/n800/results.json [runs/rm_ablation/n800/results.json]

Prints the Stage-1 table (what each run selected and measured) and the Figure-3 table with the
pooled success over seeds (Wilson 95 % interval on the pooled episodes), plus the practice facts.
"""
import json
import sys
from pathlib import Path

from efm_ros.learn.evaluate import wilson_interval


def pct(r):
    return f"{r['success']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]"


def pooled(rows, key):
    got = [r[key] for r in rows if key in r]
    wins, n = sum(round(g["success"] * g["episodes"]) for g in got), sum(g["episodes"] for g in got)
    lo, hi = wilson_interval(wins, n)
    return f"**{wins / n:.1%}** ({wins}/{n}) [{lo:.1%}, {hi:.1%}]"


def figure3(path):
    res = json.loads(Path(path).read_text())
    seeds = res["seeds"]
    print("| run | seed | policy step (val BC NLL) | reward-model step (val stg NLL, d MAE) | s, k | calib. episode P / R | train s (excl. validation) | success, Block2Block [95 % CI] |")
    print("|---|---|---|---|---|---|---|---|")
    for size, key in (("n", "BC(n)"), ("8n", "BC(8n)")):
        for seed, row in seeds.items():
            m = row["stage1"][size]
            print(f"| SFT({size} = {res['n'] * (8 if size == '8n' else 1)}) | {seed} | {m['policy_step']} ({m['val_bc_loss']:.3f}) | "
                  f"{m['reward_model_step']} ({m['val_stg_loss']:.3f}, {m['val_d_mae']:.1f}) | {m['success_threshold']:.2f}, {m['success_k']} | "
                  f"{m['success_episode_precision']:.2f} / {m['success_episode_recall']:.3f} | {m['train_seconds']:.0f} | {pct(row[key])} |")
    print()
    methods = ("BC(n)", "BC(8n)", "SFT(n)+SI")
    print("| seed | " + " | ".join(methods) + " | SI: episodes (% of n), iterations, practice s | SI version chosen without ground truth | last version | seed wall-clock |")
    print("|---" * (len(methods) + 5) + "|")
    for seed, row in seeds.items():
        p = row["practice"]
        final = Path(p["final"]).parent.parent / "eval_final.json"
        fin = pct(json.loads(final.read_text())) if final.exists() else "—"
        print(f"| {seed} | " + " | ".join(pct(row[m]) if m in row else "—" for m in methods)
              + f" | {p['episodes']} ({p['episodes'] / res['n']:.0%}), {p['iterations']}, {p['seconds']:.0f} | "
              f"{Path(p['best']).name if p['best'] else '—'} | {Path(p['final']).name}: {fin} | {row['seconds'] / 60:.0f} min |")
    print("| pooled | " + " | ".join(pooled(list(seeds.values()), m) for m in methods) + " | | | | |")


def generic(path):
    res = json.loads(Path(path).read_text())
    rows = list(res["seeds"].values())
    keys = [k for k in rows[0] if isinstance(rows[0][k], dict) and "success" in rows[0][k]]
    print("| seed | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for seed, row in res["seeds"].items():
        print(f"| {seed} | " + " | ".join(pct(row[k]) if k in row else "—" for k in keys) + " |")
    for seed, row in res["seeds"].items():
        for k, v in row.items():
            if k.startswith("practice"):
                print(f"- seed {seed}, {k}: {v['episodes']} episodes, {v['iterations']} iterations, {v['seconds']:.0f} s, "
                      f"chosen {Path(v['best']).name if v['best'] else '—'}, last {Path(v['final']).name}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"\n<!-- {p} -->")
        (figure3 if "BC(8n)" in next(iter(json.loads(Path(p).read_text())["seeds"].values())) else generic)(p)
