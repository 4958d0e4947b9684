"""``efm-ros experiment``: the paper's experiments on the embedded robot (PAPER.md §4).

    efm-ros experiment figure3   --demos data/demos --n 100 --seeds 0 1 2 --out runs/fig3
    efm-ros experiment novel     --model models/efm_sft --episodes 200 --out runs/novel
    efm-ros experiment rm-ablation --demos data/demos --n 100 --seeds 0 1 2 --out runs/rm_ablation
    efm-ros experiment ladder --rung pointmass --seeds 0 1 2 --out runs/ladder/pointmass
    efm-ros experiment ladder --rung state --oracle approach --seeds 0 --out runs/ladder/state

figure3 (Figure 3 analogue), per seed:
  BC(n)       Stage 1 on the first n demonstrations (policy = best BC val loss checkpoint),
  BC(8n)      Stage 1 on the first 8n demonstrations,
  SFT(n)+SI   Stage 2 from SFT(n) with SFT(n)'s frozen reward model, practising Block2Block on the
              embedded robot for at most ``--si-fraction`` × n episodes (paper: +10 % robot time);
              the version evaluated is the one chosen WITHOUT ground truth (best.json).
novel: the policy practises pushing the elongated bar (never in any demonstration; BananaTable
  analogue): ground-truth success on the bar before and after.
rm-ablation (Figure 4 left): SI from the same SFT(n) policy with a reward model whose vision
  backbone was pretrained (ImageNet) vs randomly initialised.

Every number is ground-truth success (95 % Wilson interval) on the same fixed evaluation seeds,
from :func:`efm_ros.learn.evaluate.success_on_fixed_episodes` (as `make demo`). Results: ``OUT/results.json`` and
``OUT/results.md`` (a table) and ``OUT/results.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from efm_ros.learn.evaluate import success_on_fixed_episodes as evaluate  # the one evaluation protocol
from efm_ros.robots import add_robot_arguments


def sft_overrides(args) -> dict:
    """``--sft`` (JSON): any SFTConfig field for every Stage-1 run of an experiment (e.g.
    ``{"goal_frame_weight": 1.0}``), checked by name; the experiment's own arguments win."""
    from efm_ros.learn.sft import SFTConfig

    extra = json.loads(getattr(args, "sft", "") or "{}")
    unknown = sorted(set(extra) - {f.name for f in dataclasses.fields(SFTConfig)})
    if unknown:
        raise SystemExit(f"efm-ros experiment: --sft has unknown SFTConfig fields {unknown}")
    return extra


def _train_and_export(demos: Path, n: int, seed: int, out: Path, *, steps: int, random_init: bool = False,
                      threads: int = 0, cache_dir: Path | None = None, sft: dict | None = None) -> Path:
    """Stage 1 on the first n demos; returns the exported model directory (cached if present).
    sft: further SFTConfig fields (:func:`sft_overrides`)."""
    from efm_ros.learn.sft import SFTConfig, train
    from efm_ros.model.export import main as export_main

    model_dir = out / "model"
    if (model_dir / "manifest.json").exists():
        return model_dir
    run = out / "run"
    cache = Path(cache_dir) if cache_dir else demos.parent / f"{demos.name}_features"
    if random_init:
        cache = cache.parent / f"{cache.name}_random"
    train(SFTConfig(**{**(sft or {}), "demos": str(demos), "out": str(run), "steps": steps, "seed": seed,
                       "max_episodes": n, "random_init": random_init, "threads": threads, "cache_dir": str(cache),
                       "progress": False}))
    if export_main([str(run), "--out", str(model_dir), "--force"]) != 0:
        raise RuntimeError(f"export of {run} failed")
    return model_dir


def _stage1_summary(model_dir: Path) -> dict:
    """What Stage 1 selected and measured (from the run's train_meta.json), for the results table."""
    meta_path = Path(model_dir).parent / "run" / "train_meta.json"
    if not meta_path.exists():
        return {}
    meta = json.loads(meta_path.read_text())
    keys = ("policy_step", "val_bc_loss", "reward_model_step", "val_stg_loss", "val_d_mae", "success_episode_precision",
            "success_episode_recall", "train_seconds")
    return {**{k: meta["metrics"][k] for k in keys if k in meta["metrics"]},
            "success_threshold": meta.get("success_threshold"), "success_k": meta.get("success_k")}


def improve_config(args, seed: int):
    """The Stage-2 configuration of one seed of an experiment: ImproveConfig's defaults, then
    ``--lr``, ``--audit-model`` and any field given in ``--improve`` (JSON), so that every Stage-2
    parameter is reachable from every experiment."""
    from efm_ros.learn.improve import ImproveConfig

    extra = json.loads(args.improve or "{}")
    unknown = sorted(set(extra) - {f.name for f in dataclasses.fields(ImproveConfig)})
    if unknown:
        raise SystemExit(f"efm-ros experiment: --improve has unknown ImproveConfig fields {unknown}")
    return ImproveConfig(seed=seed, **({"lr": args.lr} if args.lr else {}),
                         **({"audit_model": str(args.audit_model)} if args.audit_model else {}), **extra)


def robot_of(args) -> dict:
    """The robot an experiment practises and evaluates on: ``robot`` and ``robot_kwargs`` from
    ``--robot`` / ``--robot-args`` (the backend's practice task unless they name one)."""
    from efm_ros.robots import DEFAULT_ROBOT, parse_robot_args

    return {"robot": getattr(args, "robot", DEFAULT_ROBOT),
            "robot_kwargs": parse_robot_args(getattr(args, "robot_args", None))}


def _practise(policy: Path, reward: Path, out: Path, budget: int, seed: int, workers: int, robot: dict, args) -> dict:
    """Stage 2 in process; ``robot``: {"robot": backend, "robot_kwargs": {...}} (:func:`robot_of`)."""
    from efm_ros.learn.practice import practise_sim

    res = practise_sim(policy, reward, out, episode_budget=budget, config=improve_config(args, seed), workers=workers,
                       seed=seed, **robot)
    return {"episodes": res.episodes, "iterations": res.iterations, "seconds": res.seconds,
            "best": str(res.best_version_dir) if res.best_version_dir else None, "final": str(res.final_version_dir)}


def marked_operating_point(model: Path, out: Path, episodes: int, workers: int, robot: dict) -> tuple[Path, dict]:
    """The product's step between Stage 1 and practice (docs/results.md, "The detector's operating point
    chosen on the policy's own marked rollouts"): record ``episodes`` rollouts of ``model``'s policy
    (:data:`~efm_ros.learn.evaluate.MARKED_ROLLOUT_SEED`), mark each reached or not, and choose the
    detector's (s, k) on them (``efm-ros calibrate``). In simulation the marks come from the simulator's
    ground truth, standing in for the operator who marks a real arm's rollouts (``efm-ros mark``); each
    is one human label in the product, counted in the returned facts. Returns (the model to practise
    with, facts); where calibrate refuses the detector (``calibrate.uninformative``: it detects no
    reached rollout, or is right no more often than chance), ``model`` itself and the reason."""
    from efm_ros.learn.calibrate import calibrate_on_rollouts
    from efm_ros.learn.evaluate import MARKED_ROLLOUT_SEED, evaluate_policy, record_marks

    calibrated, rollouts, facts_file = out / "model", out / "rollouts", out / "marked.json"
    if facts_file.exists():
        facts = json.loads(facts_file.read_text())
        return (calibrated if facts.get("chosen") else model), facts
    shutil.rmtree(out, ignore_errors=True)                    # a killed earlier attempt
    t0 = time.monotonic()
    r = evaluate_policy(model, episodes, seed=MARKED_ROLLOUT_SEED, workers=workers, record_dir=rollouts,
                        progress=False, **robot)
    facts = {"episodes": episodes, "seed": MARKED_ROLLOUT_SEED, "labels": record_marks(r, rollouts),
             "marked_by": "simulator ground truth, standing in for an operator",
             "reached": r["ground_truth"]["successes"]}
    try:
        c = calibrate_on_rollouts(model, [rollouts], calibrated, force=True)
        facts.update({"before": c["before"].to_dict(), "chosen": c["chosen"].to_dict(), "method": c["method"]})
    except ValueError as exc:                                  # refused: calibrate.uninformative
        facts["error"] = str(exc)
    facts["seconds"] = round(time.monotonic() - t0, 1)
    facts_file.write_text(json.dumps(facts, indent=1))
    return (calibrated if facts.get("chosen") else model), facts


def figure3(args) -> dict:
    out = Path(args.out)
    results = {"n": args.n, "si_fraction": args.si_fraction, "seeds": {}, "eval_episodes": args.eval_episodes,
               "mark_rollouts": args.mark_rollouts, "improve": dataclasses.asdict(improve_config(args, 0))}
    robot, sft = robot_of(args), sft_overrides(args)
    for seed in args.seeds:
        t0 = time.monotonic()
        sd = out / f"seed{seed}"
        small = _train_and_export(args.demos, args.n, seed, sd / "bc_n", steps=args.steps, threads=args.threads,
                                  cache_dir=args.cache_dir, sft=sft)
        large = _train_and_export(args.demos, 8 * args.n, seed, sd / "bc_8n", steps=args.steps_large or args.steps,
                                  threads=args.threads, cache_dir=args.cache_dir, sft=sft)
        budget = max(1, math.floor(args.si_fraction * args.n))
        start, marked = small, None
        if args.mark_rollouts:                                 # the detector's point on marked rollouts of SFT(n)
            start, marked = marked_operating_point(small, sd / "marked", args.mark_rollouts, args.workers, robot)
        si = _practise(start, start, sd / "si", budget, seed, args.workers, robot, args)
        row = {"BC(n)": evaluate(small, args.eval_episodes, args.workers, **robot),
               "BC(8n)": evaluate(large, args.eval_episodes, args.workers, **robot),
               "practice": si, "stage1": {"n": _stage1_summary(small), "8n": _stage1_summary(large)},
               **({"marked_rollouts": marked} if marked is not None else {})}
        if si["best"]:
            row["SFT(n)+SI"] = evaluate(Path(si["best"]), args.eval_episodes, args.workers, **robot)
            row["SFT(n)+SI"]["version"] = Path(si["best"]).name
        row["SFT(n)+SI, last"] = evaluate(Path(si["final"]), args.eval_episodes, args.workers, **robot)
        row["seconds"] = time.monotonic() - t0
        results["seeds"][str(seed)] = row
        results["pooled"] = pooled(results["seeds"], FIGURE3_ARMS)
        _write(out, results, FIGURE3_ARMS, "Figure 3 analogue: Block2Block ground-truth success")
        if args.record:                                   # after every seed: a run cut short keeps the seeds it finished
            _record(args.record, args.tag or "default", results, combine=join_seeds)
    return results


def join_seeds(old: dict, new: dict) -> dict:
    """figure3's entry in the results JSON when seeds run separately (e.g. one per session) under one
    tag: the new run's fields, every seed of both (the new run's where both have one), pooled again."""
    seeds = {**old.get("seeds", {}), **new["seeds"]}
    return {**new, "seeds": seeds, "pooled": pooled(seeds, FIGURE3_ARMS)}


#: figure3's arms: the version chosen without ground truth is "SFT(n)+SI" (the paper's), the last one beside it
FIGURE3_ARMS = ("BC(n)", "BC(8n)", "SFT(n)+SI", "SFT(n)+SI, last")


def pooled(seeds: dict, arms: Sequence[str]) -> dict:
    """Each arm's successes over every seed's evaluation episodes, with a Wilson 95 % interval."""
    from efm_ros.learn.evaluate import wilson_interval

    out = {}
    for arm in arms:
        rows = [r[arm] for r in seeds.values() if arm in r]
        if rows:
            wins = sum(round(r["success"] * r["episodes"]) for r in rows)
            n = sum(r["episodes"] for r in rows)
            out[arm] = {"success": wins / n, "ci95": list(wilson_interval(wins, n)), "episodes": n, "seeds": len(rows)}
    return out


#: novel's arms: "after" is the version chosen without ground truth (the paper's), "last" the last one beside it
NOVEL_ARMS = ("before", "after", "last")


def novel(args) -> dict:
    """Practise on the novel bar: add its instructions to the model, evaluate, practise, evaluate."""
    from efm_ros.model.export import export_model, load_model_checkpoints
    from efm_ros.model.manifest import verify_manifest
    from efm_ros.model.text import InstructionEncoder, InstructionTable
    from efm_ros.sim.instructions import all_instructions

    out = Path(args.out)
    base = out / "model_with_bar"
    if not (base / "manifest.json").exists():
        m = verify_manifest(args.model)
        table = InstructionTable.load(Path(args.model) / m["instructions"]["file"])
        bar = [t for t in all_instructions(("bar2location",)) if t not in table]
        for text, emb in zip(bar, InstructionEncoder().encode(bar)):
            table.add(text, emb)
        policy, reward = load_model_checkpoints(args.model)
        export_model(policy, base, reward_model=reward, instructions=table,
                     success_threshold=m["success"]["threshold_steps"], success_k=m["success"]["consecutive"],
                     control_rate_hz=m["control_rate_hz"], data_hash=m.get("data_hash", ""), metrics=m.get("metrics", {}),
                     model_version=f"{m['model_version']}+bar", overwrite=True)
    results = {"seeds": {}, "eval_episodes": args.eval_episodes}
    for seed in args.seeds:
        si = _practise(base, base, out / f"seed{seed}" / "si", args.episodes, seed, args.workers,
                       {"robot_kwargs": {"variant": "novel_bar"}}, args)
        row = {"before": evaluate(base, args.eval_episodes, args.workers, variant="novel_bar"), "practice": si}
        if si["best"]:
            row["after"] = evaluate(Path(si["best"]), args.eval_episodes, args.workers, variant="novel_bar")
        row["last"] = evaluate(Path(si["final"]), args.eval_episodes, args.workers, variant="novel_bar")
        results["seeds"][str(seed)] = row
        _write(out, results, NOVEL_ARMS, "Novel object (bar, never demonstrated): ground-truth success")
    return results


def rm_ablation(args) -> dict:
    out = Path(args.out)
    results = {"n": args.n, "seeds": {}, "eval_episodes": args.eval_episodes}
    budget = max(1, math.floor(args.si_fraction * args.n))
    robot, sft = robot_of(args), sft_overrides(args)
    for seed in args.seeds:
        sd = out / f"seed{seed}"
        policy = _train_and_export(args.demos, args.n, seed, sd / "pretrained", steps=args.steps, threads=args.threads,
                                   cache_dir=args.cache_dir, sft=sft)
        scratch = _train_and_export(args.demos, args.n, seed, sd / "random_init", steps=args.steps, random_init=True,
                                    threads=args.threads, cache_dir=args.cache_dir, sft=sft)
        row = {"SFT(n)": evaluate(policy, args.eval_episodes, args.workers, **robot),
               "stage1": {"pretrained": _stage1_summary(policy), "random_init": _stage1_summary(scratch)}}
        for name, rm in (("SI, pretrained RM", policy), ("SI, random-init RM", scratch)):
            si = _practise(policy, rm, sd / name.replace(" ", "_").replace(",", ""), budget, seed, args.workers,
                           robot, args)
            row[f"practice {name}"] = si
            if si["best"]:
                row[name] = evaluate(Path(si["best"]), args.eval_episodes, args.workers, **robot)
        results["seeds"][str(seed)] = row
        _write(out, results, ("SFT(n)", "SI, pretrained RM", "SI, random-init RM"),
               "Reward-model pretraining ablation: Block2Block ground-truth success")
    return results


#: the ladder's rungs on state observations, with their default demonstration counts: the authors'
#: pointmass (0, the notebook's 10,000) and the table with privileged state ("state": the camera
#: protocol's n = 800), both Stage 1 and Stage 2 by efm_ros.learn.pointmass
STATE_RUNGS = {"pointmass": 10_000, "state": 800}
#: the tabletop rungs of the ladder: (reward from the oracle?, episodes end on the oracle?)
RUNGS = {"a": (True, True), "b": (False, True), "c": (True, False), "d": (False, False)}
RUNG_NAMES = {"a": "oracle reward + oracle termination", "b": "learned reward + oracle termination",
              "c": "oracle reward + learned detector", "d": "the product: learned reward + learned detector"}


def _record(path: str, key: str, value: dict, combine=None) -> None:
    """Set one entry of a shared results JSON; runs started side by side may record concurrently
    (an exclusive lock around the read-modify-write, and an atomic replace). ``combine(old, new)``,
    if given, makes the entry from the one already there (if any) and ``value``."""
    import fcntl
    import os

    rec = Path(path)
    rec.parent.mkdir(parents=True, exist_ok=True)
    with open(rec.with_name(f".{rec.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(rec.read_text()) if rec.exists() else {}
        doc[key] = combine(doc[key], value) if combine is not None and key in doc else value
        tmp = rec.with_name(f".{rec.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, rec)


def ladder(args) -> dict:
    """The Stage-2 ladder (simulation only): prove the learner before the reward model.

    Rung "pointmass" (0): the authors' toy with our Stage-1/Stage-2 code (efm_ros.learn.pointmass).
    Rungs a-d: Stage 2 from ``--model`` on the embedded table with the same budget, the reward and
    the termination each either the learned model's or the PRIVILEGED oracle's (learn.oracle):
    success before -> chosen without ground truth -> last, with CIs, and per-iteration entropy,
    returns and gradient norms. Writes OUT/results.json, and with --record one entry of the ladder JSON."""
    results = {}
    for seed in args.seeds:
        improve = improve_config(args, seed)
        sd = Path(args.out) / f"seed{seed}"
        if args.rung in STATE_RUNGS:
            from efm_ros.learn.pointmass import PointmassConfig, run

            task, oracle_reward = None, False
            if args.rung == "state":
                from efm_ros.learn.tablestate import table_task

                task, oracle_reward = table_task(args.oracle), args.state_reward == "oracle"
            demos = args.demos_count or STATE_RUNGS[args.rung]
            cfg = PointmassConfig(demos=demos, sft_steps=args.sft_steps, si_transitions=args.si_transitions,
                                  eval_episodes=args.eval_episodes, seed=seed, improve=improve, threads=args.threads,
                                  stage1_cache=str(args.stage1_cache or ""),
                                  action_bins=args.action_bins or (41 if args.rung == "pointmass" else 21))
            r = run(cfg, sd, task=task, oracle_reward=oracle_reward)
            results[str(seed)] = {k: r[k] for k in ("before", "after", "stage1", "seconds", "history")}
            continue
        from efm_ros.learn.practice import practise_sim

        oracle_reward, oracle_termination = RUNGS[args.rung]
        t0 = time.monotonic()
        b2b = {"families": ["block2block"]}
        res = practise_sim(args.model, args.model, sd / "si", episode_budget=args.episodes, config=improve,
                           workers=args.workers, seed=seed, robot_kwargs=b2b, oracle=args.oracle,
                           oracle_reward=oracle_reward, oracle_termination=oracle_termination)
        row = {"before": evaluate(Path(args.model), args.eval_episodes, args.workers, families=["block2block"]),
               "last": evaluate(res.final_version_dir, args.eval_episodes, args.workers, families=["block2block"]),
               "iterations": res.iterations, "episodes": res.episodes,
               "history": [{k: h.get(k) for k in ("iteration", "version", "episodes", "gt_reached_rate",
                                                 "detector_success_rate", "episode_length", "policy_entropy",
                                                 "train_entropy", "mean_return", "return_mean", "return_std",
                                                 "grad_norm", "grad_norm_max", "kl_update_mean", "kl_update_max", "loss",
                                                 "lr", "steps")}
                           for h in res.history]}
        if res.best_version_dir is not None:
            row["chosen"] = evaluate(res.best_version_dir, args.eval_episodes, args.workers, families=["block2block"])
            row["chosen"]["version"] = json.loads((sd / "si" / "best.json").read_text())["version"]
        row["seconds"] = time.monotonic() - t0
        results[str(seed)] = row
    out = {"rung": args.rung, "seeds": results}
    if args.rung == "pointmass":
        out["target"] = "SFT ~0.92 -> SI ~1.00, episode length ~69 -> ~13 steps (PAPER.md 4.7)"
    elif args.rung == "state":
        out.update({"name": f"table, privileged state: {args.state_reward} reward + oracle termination",
                    "oracle": args.oracle, "state_reward": args.state_reward, "improve": dataclasses.asdict(improve)})
    else:
        out.update({"name": RUNG_NAMES[args.rung], "model": str(args.model), "oracle": args.oracle,
                    "practice_episodes": args.episodes, "improve": dataclasses.asdict(improve)})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(out, indent=1))
    if args.record:
        _record(args.record, args.rung if args.rung == "pointmass" else f"{args.rung}:{args.tag or 'default'}", out)
    for seed, r in results.items():
        if args.rung in STATE_RUNGS:
            b, a = r["before"], r["after"]
            print(f"seed {seed}: SFT {b['success']:.1%} ({b['mean_length']:.1f} steps) -> SFT+SI {a['success']:.1%} "
                  f"({a['mean_length']:.1f} steps)", flush=True)
        else:
            print(f"seed {seed}: before {r['before']['success']:.1%} -> chosen "
                  f"{r.get('chosen', {}).get('success', float('nan')):.1%} -> last {r['last']['success']:.1%}", flush=True)
    return out


def _write(out: Path, results: dict, methods: tuple[str, ...], title: str) -> None:
    """results.json, a markdown table (per seed and mean) and a bar plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    seeds = results["seeds"]
    lines = [f"### {title}", "", "| seed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    means = {}
    for seed, row in seeds.items():
        cells = []
        for m in methods:
            r = row.get(m)
            cells.append("—" if r is None else f"{r['success']:.1%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]")
            if r is not None:
                means.setdefault(m, []).append(r["success"])
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{np.mean(means[m]):.1%}" if m in means else "—" for m in methods) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(methods), 3.6))
    for i, m in enumerate(methods):
        ys = means.get(m, [])
        ax.bar(i, np.mean(ys) if ys else 0, color="#2b7bba" if "SI" in m or m in ("after", "last") else "#999999", alpha=0.8)
        ax.scatter([i] * len(ys), ys, color="k", zorder=3, s=12)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ground-truth success")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=110)
    plt.close(fig)
    print("\n".join(lines), flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros experiment", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="which", required=True)
    for name in ("figure3", "rm-ablation"):
        s = sub.add_parser(name)
        s.add_argument("--demos", type=Path, required=True, help="demonstration bags (at least 8n for figure3)")
        s.add_argument("--n", type=int, required=True, help="the small demonstration set size")
        s.add_argument("--steps", type=int, default=3000, help="Stage-1 training steps")
        s.add_argument("--steps-large", type=int, default=None, help="Stage-1 steps for BC(8n) (default --steps)")
        s.add_argument("--si-fraction", type=float, default=0.1, help="practice episodes as a fraction of n")
        s.add_argument("--threads", type=int, default=0, help="Stage-1 torch / ONNX Runtime threads (0: defaults)")
        s.add_argument("--cache-dir", type=Path, default=None,
                       help="Stage-1 feature cache (default DEMOS_features next to the demos)")
        s.add_argument("--sft", default="", help='any other Stage-1 parameter: SFTConfig fields as JSON, '
                                                  'e.g. \'{"goal_frame_weight": 1.0}\'')
        add_robot_arguments(s)
    f3 = sub.choices["figure3"]
    f3.add_argument("--mark-rollouts", type=int, default=0, metavar="R",
                    help="before practice, record R rollouts of SFT(n), mark them (in simulation from ground truth, "
                         "standing in for an operator: R labels) and practise with the detector's point chosen on "
                         "them (efm-ros calibrate; default 0: Stage 1's calibrated point, the paper's)")
    f3.add_argument("--tag", default="", help="name of this run in the --record JSON")
    f3.add_argument("--record", default="", help="also write the results into this JSON (docs/results/figure3.json)")
    lad = sub.add_parser("ladder", help="the Stage-2 ladder (simulation only); --rung pointmass: the authors' toy")
    lad.add_argument("--rung", choices=(*STATE_RUNGS, *RUNGS), default="pointmass",
                     help="pointmass (0); state (the table with privileged state observations, oracle termination); "
                          "or a-d: " + "; ".join(f"{k} = {v}" for k, v in RUNG_NAMES.items()))
    lad.add_argument("--model", type=Path, default=Path("models/efm_sft"), help="rungs a-d: the Stage-1 model (policy and reward)")
    lad.add_argument("--episodes", type=int, default=300, help="rungs a-d: practice episodes")
    lad.add_argument("--oracle", choices=("goal", "approach"), default="goal",
                     help="rungs a-d: privileged d: goal = A (target to goal), approach = B (+ pusher to the block)")
    lad.add_argument("--tag", default="", help="rungs a-d: name of this variant in the ladder JSON")
    lad.add_argument("--demos-count", type=int, default=0,
                     help="pointmass / state: demonstrations (default: the notebook's 10,000 / the camera protocol's n = 800)")
    lad.add_argument("--sft-steps", type=int, default=20_000, help="pointmass / state: Stage-1 steps at batch 256")
    lad.add_argument("--si-transitions", type=int, default=131_072,
                     help="pointmass / state: Stage-2 budget in transitions (notebook: 131,072)")
    lad.add_argument("--action-bins", type=int, default=0, help="pointmass / state: bins per action dimension "
                     "(default 41 / 21: the camera model's)")
    lad.add_argument("--stage1-cache", type=Path, default=None,
                     help="pointmass / state: keep and reuse Stage-1 results here, keyed by their inputs "
                          "(learner variants from the same start skip Stage 1), e.g. runs/cache/stage1")
    lad.add_argument("--state-reward", choices=("oracle", "model"), default="oracle",
                     help="state: the reward is the --oracle d (rung a) or the learned d from state (rung b)")
    lad.add_argument("--threads", type=int, default=0)
    lad.add_argument("--record", default="", help="also write this rung into a ladder JSON (docs/results/ladder.json)")
    n = sub.add_parser("novel")
    n.add_argument("--model", type=Path, default=Path("models/efm_sft"), help="Stage-1 model")
    n.add_argument("--episodes", type=int, default=200, help="practice episodes on the bar")
    for s in sub.choices.values():
        s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        s.add_argument("--out", type=Path, required=True)
        s.add_argument("--eval-episodes", type=int, default=100)
        s.add_argument("--workers", type=int, default=2)
        s.add_argument("--lr", type=float, default=None, help="Stage-2 learning rate (default ImproveConfig.lr)")
        s.add_argument("--improve", default="", help='any other Stage-2 parameter: ImproveConfig fields as JSON, '
                       'e.g. \'{"gamma": 0.0, "train_layers": "tilt"}\'')
        s.add_argument("--audit-model", type=Path, default=None,
                       help="independent steps-to-go model for choosing the best version (ImproveConfig.audit_model)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    {"figure3": figure3, "novel": novel, "rm-ablation": rm_ablation, "ladder": ladder}[args.which](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
