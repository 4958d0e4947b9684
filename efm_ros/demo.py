"""``make demo`` / ``efm-ros demo``: the embedded self-improvement loop, end to end, with a report.

1. before: ground-truth success of the Stage-1 policy on fixed evaluation seeds (``efm-ros eval``),
2. practice: a fleet of simulated robots — sim robot, camera, policy, steps-to-go reward/success
   and logger nodes per robot (``efm-ros up``) — writes episode bags while ``efm-ros improve``
   trains on them and publishes new policy versions that the policy nodes hot-swap to,
3. after: the same evaluation of the best version (chosen WITHOUT ground truth, see
   efm_ros.learn.improve) and of the last one,
4. a short report: table + plot in ``RUN/report.md`` / ``RUN/report.png``.

Ground truth is used only in steps 1 and 3 (evaluation), never while practising.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/efm_sft"),
                   help="Stage-1 model, policy + frozen reward (default: the bundled SFT(n = 800), see docs/results.md)")
    p.add_argument("--robots", type=int, default=4, help="simulated robots practising in parallel")
    p.add_argument("--minutes", type=float, default=8.0, help="practice time")
    p.add_argument("--eval-episodes", type=int, default=60, help="evaluation episodes before and after")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/demo-<time>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--improve-args", default="", help="extra arguments for efm-ros improve, e.g. '--lr 1e-4'")
    return p


def _evaluate(model: Path, n: int, label: str) -> dict:
    """The one evaluation protocol of every before/after comparison (the fixed COMPARISON_SEED
    episodes, as in ``efm-ros experiment``), with a progress bar and the result printed."""
    from efm_ros.learn.evaluate import success_on_fixed_episodes as evaluate

    print(f"\n== evaluating {label}: {model} on {n} fixed Block2Block episodes (ground truth, evaluation only)", flush=True)
    result = evaluate(model, n, workers=1, progress=True, families=["block2block"])
    print(f"   success {result['success']:.1%} (95% CI {result['ci95'][0]:.1%}-{result['ci95'][1]:.1%})", flush=True)
    return result


def _count_bags(episodes: Path) -> int:
    from efm_ros.data.reader import list_episodes

    return len(list_episodes(episodes)) if episodes.exists() else 0


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def _stop(proc: subprocess.Popen, name: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"   {name} did not stop in 30 s: killing it", flush=True)
            proc.kill()


def practise(args, run: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # the simulator stays on this machine
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    episodes = run / "episodes"
    exe = [sys.executable, "-m", "efm_ros.cli"]
    trainer = subprocess.Popen([*exe, "improve", "--episodes-dir", str(episodes), "--policy", str(args.model),
                                "--reward-model", str(args.model), "--out", str(run / "si"), "--coordinate",
                                *args.improve_args.split()], env=env, stdout=open(run / "improve.log", "w"),
                               stderr=subprocess.STDOUT)
    graph = subprocess.Popen([*exe, "up", "--robots", str(args.robots), "--model", str(args.model),
                              "--episodes-dir", str(episodes), "--watch-dir", str(run / "si" / "versions"),
                              "--seed", str(args.seed)], env=env, stdout=open(run / "graph.log", "w"),
                             stderr=subprocess.STDOUT)
    print(f"\n== practising: {args.robots} robots + trainer for {args.minutes:g} min "
          f"(logs: {run}/graph.log, {run}/improve.log)", flush=True)
    t0 = time.monotonic()
    shown = 0
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(10)
            for name, proc in (("graph", graph), ("trainer", trainer)):
                if proc.poll() is not None:
                    raise RuntimeError(f"the {name} exited early ({proc.returncode}); see {run}/{name if name == 'graph' else 'improve'}.log")
            rows = _metrics(run / "si")
            line = f"   {time.monotonic() - t0:5.0f} s  episodes {_count_bags(episodes):4d}  policy iterations {len(rows):3d}"
            if rows:
                last = rows[-1]
                line += (f"  last: detector success {float(last.get('detector_success_rate', 'nan')):.0%}"
                         f", ground truth {float(last.get('gt_success_rate') or 'nan'):.0%}"
                         f", length {float(last.get('episode_length', 'nan')):.0f}")
            print(line, flush=True)
            for r in rows[shown:]:
                print(f"   -> new policy {r['version']} (trained on {r['episodes']} episodes)", flush=True)
            shown = len(rows)
    finally:
        _stop(graph, "graph")
        _stop(trainer, "trainer")


def fleet_summary(si: Path) -> str:
    """The coordinated fleet's use of robot time, from the trainer's RUN/fleet.json: the share of
    episodes discarded at a version switch (off-policy) and the share of time the fleet practised."""
    path = si / "fleet.json"
    if not path.exists():
        return ""
    log = json.loads(path.read_text())
    if not log:
        return ""
    counts = log[-1]["counts"]
    read = sum(v for k, v in counts.items() if k.startswith("episodes_"))
    off = counts.get("episodes_off_policy", 0)
    switch = [e["switch_s"] for e in log]
    parts = "; ".join(f"{label} {np.median([e[k] for e in log if e.get(k) is not None]):.2f} s"
                      for k, label in (("settle_s", "settle"), ("update_s", "update + export"), ("export_s", "of it export"))
                      if any(e.get(k) is not None for e in log))
    return (f"Fleet: {len(log)} coordinated updates; episodes discarded at a version switch: {off} of {read} "
            f"({off / max(read, 1):.0%}); time practising (not paused for an update): {1 - log[-1]['paused_share']:.0%}; "
            f"per pause (median): {parts}; version switch {min(switch):.2f}–{max(switch):.2f} s"
            + (f"; unresponsive robots: {', '.join(log[-1]['unresponsive'])}" if log[-1]["unresponsive"] else ""))


def report(run: Path, before: dict, after: dict[str, dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("Stage 1 (SFT)", before)] + list(after.items())
    lines = ["| policy | ground-truth success | 95% CI | mean length (successes) |", "|---|---|---|---|"]
    for name, r in rows:
        lo, hi = r["ci95"]
        length = r.get("mean_length")
        lines.append(f"| {name} | {r['success']:.1%} | {lo:.1%}–{hi:.1%} | "
                     f"{'n/a' if length is None else f'{length:.1f}'} |")
    fleet = fleet_summary(run / "si")
    if fleet:
        lines += ["", fleet]
    table = "\n".join(lines)
    metrics = _metrics(run / "si")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [n for n, _ in rows]
    rates = [r["success"] for _, r in rows]
    errs = [[rate - r["ci95"][0] for rate, (_, r) in zip(rates, rows)], [r["ci95"][1] - rate for rate, (_, r) in zip(rates, rows)]]
    axes[0].bar(names, rates, yerr=errs, capsize=4, color=["#999999"] + ["#2b7bba"] * (len(rows) - 1))
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("ground-truth success")
    axes[0].set_title("before / after self-improvement")
    if metrics:
        it = [int(m["iteration"]) for m in metrics]
        for key, label in (("detector_success_rate", "detector success (practice)"),
                           ("gt_success_rate", "ground-truth success (practice)")):
            ys = [float(m[key]) if m.get(key) not in (None, "") else float("nan") for m in metrics]
            axes[1].plot(it, ys, marker="o", label=label)
        axes[1].set_xlabel("policy iteration")
        axes[1].set_ylim(0, 1)
        axes[1].legend(fontsize=8)
        axes[1].set_title("during practice")
    fig.tight_layout()
    fig.savefig(run / "report.png", dpi=110)
    plt.close(fig)
    text = (f"# efm_ros demo report\n\n{table}\n\nPractice: {len(metrics)} policy iterations, "
            f"{_count_bags(run / 'episodes')} episodes. Plot: report.png; per-iteration metrics: si/metrics.csv.\n")
    (run / "report.md").write_text(text)
    return table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.model / "manifest.json").exists():
        print(f"efm-ros demo: no Stage-1 model at {args.model}. Build the bundled one with "
              f"`bash tools/make_bundled_model.sh` (see docs/results.md).", file=sys.stderr)
        return 2
    run = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run.mkdir(parents=True, exist_ok=True)
    before = _evaluate(args.model, args.eval_episodes, "Stage 1 (before)")
    practise(args, run)
    after = {}
    best = json.loads((run / "si" / "best.json").read_text()) if (run / "si" / "best.json").exists() else None
    if best is None:
        print("\nno new policy version was trained in the time given: nothing to compare", flush=True)
    else:
        versions = sorted((run / "si" / "versions").iterdir())
        candidates = {f"best by detector ({best['version']})": run / "si" / best["directory"]}
        if versions and versions[-1] != run / "si" / best["directory"]:
            candidates[f"last ({versions[-1].name})"] = versions[-1]
        for name, path in candidates.items():
            # the guard may keep the starting policy (no version beat it): its result is `before`,
            # on the same fixed seeds, so it is not evaluated a second time
            same = path.resolve() == args.model.resolve()
            after[name] = before if same else _evaluate(path, args.eval_episodes, name)
    table = report(run, before, after)
    print(f"\n== report ({run}/report.md, {run}/report.png)\n\n{table}\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
