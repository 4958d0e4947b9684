"""Model benchmark: control-tick latency (torch eager vs ONNX Runtime) and head training throughput.

    efm-ros bench model                 # ~1 min: latency on ONE pinned core, training on 2 threads
    python -m efm_ros.bench.model --seconds 1 --train-steps 10     # quick look

Latency: batch 1, 96x96 frames, the exported graphs (preprocessing + backbone on both frames +
heads) against the same modules in torch eager mode, on one core (sched_setaffinity,
torch.set_num_threads(1), ORT intra_op_num_threads=1). A control tick runs both heads: the policy
(``OnnxEFM.act``, sampling included) and the reward model (``OnnxEFM.steps_to_go``).
Training: AdamW steps of L_BC + L_stg on cached backbone features at batch 128, 2 threads; and the
cost of caching those features (eager ``backbone_features`` vs ``OnnxFeatureExtractor``).
Goals: ORT >= 3x faster than eager; a full tick p99 < 10 ms on one core.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def latency_ms(fn, seconds: float, warmup: int = 20, min_iters: int = 50) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_iters:
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return np.asarray(times) / 1e6


def _pin_one_core() -> tuple[set[int], int]:
    allowed = os.sched_getaffinity(0)
    core = max(allowed)
    os.sched_setaffinity(0, {core})
    return allowed, core


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="efm-ros bench model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per latency row")
    ap.add_argument("--train-steps", type=int, default=30, help="timed AdamW steps for training throughput")
    ap.add_argument("--batch", type=int, default=128, help="training batch size")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    from efm_ros.bench.graph import floor_ms
    from efm_ros.learn.objectives import bc_loss, steps_to_go_loss
    from efm_ros.model.export import OnnxFeatureExtractor, PolicyGraph, RewardGraph, export_model
    from efm_ros.model.network import EFM, EFMConfig, random_inputs
    from efm_ros.model.text import InstructionTable

    torch.manual_seed(0)
    model = EFM(EFMConfig()).eval()
    instruction = "push the red block to the blue block"
    table = InstructionTable({instruction: np.full(384, 384 ** -0.5, np.float32)})
    rows: list[tuple[str, str, np.ndarray | float]] = []
    results: dict[str, dict] = {}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench"
        export_model(model, out, instructions=table, success_threshold=2.0, success_k=3, control_rate_hz=5.0,
                     data_hash="bench", metrics={}, model_version="bench")

        allowed, core = _pin_one_core()
        torch.set_num_threads(1)
        frame, prev, text = random_inputs(model.config, 1)
        feed = {"frame": frame.numpy(), "prev_frame": prev.numpy(), "instruction_embedding": text.numpy()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sessions = {r: ort.InferenceSession(str(out / f"{r}.onnx"), opts, providers=["CPUExecutionProvider"])
                    for r in ("policy", "reward")}
        eager = {"policy": PolicyGraph(model).eval(), "reward": RewardGraph(model).eval()}
        lat = {}
        with torch.inference_mode():
            for role in ("policy", "reward"):
                lat[f"eager {role}"] = latency_ms(lambda r=role: eager[r](frame, prev, text), args.seconds)
                lat[f"ORT {role}"] = latency_ms(lambda r=role: sessions[r].run(None, feed), args.seconds)
            lat["eager tick (both heads)"] = latency_ms(
                lambda: (eager["policy"](frame, prev, text), eager["reward"](frame, prev, text)), args.seconds)
        lat["ORT tick: act + steps_to_go"] = floor_ms(str(out), args.seconds)   # a new frame each tick
        for name, t in lat.items():
            rows.append((f"{name}, B=1, 1 core", "ms p50 / p99", t))
            results[name] = {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                             "n": int(t.size)}

        # Training throughput of the trainable head on cached features, 2 threads.
        os.sched_setaffinity(0, allowed)
        threads = min(2, len(allowed))
        torch.set_num_threads(threads)
        model.train()
        c, h, w = model.feature_shape
        b = args.batch
        cur, prv = torch.randn(b, c, h, w), torch.randn(b, c, h, w)
        txt = torch.nn.functional.normalize(torch.randn(b, 384), dim=-1)
        tokens, stg = torch.randint(0, 21, (b, 2)), torch.randint(0, 50, (b,))
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-4)

        def step():
            a, s = model.head(cur, prv, txt)
            loss = bc_loss(a, tokens) + steps_to_go_loss(s, stg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            step()
        train_sps = args.train_steps * b / (time.perf_counter() - t0)
        rows.append((f"train head on cached features, B={b}, {threads} threads", "samples/s", train_sps))
        results["train_head_samples_per_s"] = {"value": train_sps, "threads": threads, "batch": b}

        # Feature caching throughput (what Stage-1 preprocessing pays once per frame), 2 threads.
        model.eval()
        frames = random_inputs(model.config, 64)[0]
        with torch.inference_mode():
            model.backbone_features(frames)
            t0 = time.perf_counter()
            for _ in range(5):
                model.backbone_features(frames)
            eager_fps = 5 * 64 / (time.perf_counter() - t0)
        rows.append((f"feature caching, eager backbone_features, B=64, {threads} threads", "frames/s", eager_fps))
        extractor = OnnxFeatureExtractor(model, threads=threads)
        extractor(frames.numpy())
        t0 = time.perf_counter()
        for _ in range(5):
            extractor(frames.numpy())
        ort_fps = 5 * 64 / (time.perf_counter() - t0)
        rows.append((f"feature caching, OnnxFeatureExtractor, B=64, {threads} threads", "frames/s", ort_fps))
        results["feature_cache_frames_per_s"] = {"eager": eager_fps, "ort": ort_fps, "threads": threads}

    print(f"EFM benchmark: {model.num_parameters() / 1e6:.2f}M trainable params, feature map {model.feature_shape}, "
          f"96x96 frames, latency pinned to core {core}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(width)}  {'unit':<13}  value")
    for name, unit, v in rows:
        value = (f"{np.percentile(v, 50):6.2f} / {np.percentile(v, 99):6.2f}" if isinstance(v, np.ndarray)
                 else f"{v:8.0f}")
        print(f"{name.ljust(width)}  {unit:<13}  {value}")
    speed = {r: results[f"eager {r}"]["p50_ms"] / results[f"ORT {r}"]["p50_ms"] for r in ("policy", "reward")}
    tick_p99 = results["ORT tick: act + steps_to_go"]["p99_ms"]
    print(f"ORT speed-up over eager (p50): policy {speed['policy']:.1f}x, reward {speed['reward']:.1f}x "
          f"(goal >= 3x); tick p99 {tick_p99:.2f} ms (goal < 10 ms)")
    results["speedup_p50"] = speed
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
