"""What do the camera features hold? (docs/results.md, Stage 1; privileged state, experiment only)

    .venv/bin/python tools/perception_probe.py FEATURE_CACHE                      # the features probe (~3 min)
    .venv/bin/python tools/perception_probe.py FEATURE_CACHE RUN [CHECKPOINT]     # the policy probe (seconds)
    .venv/bin/python tools/perception_probe.py FEATURE_CACHE RUN [CHECKPOINT] --held-out-of 6400
        # a RUN trained on more demos (the first 6400): fit on its training episodes among the cache's, score on its validation ones
    .venv/bin/python tools/perception_probe.py FEATURE_CACHE RUN --joint-head     # the action head probe (~3 min)
    # e.g. data/stage1/feature_cache/df2eee9ec57df306f9f4 models/efm_sft   (the 800 demos of seed 0)

FEATURE_CACHE is one ``train-sft`` feature cache of the first N demonstrations of ``collect-demos
--seed 0`` (both block families, the table's defaults). Their true states are replayed with
``tablestate.demonstrations`` (index i is bag i, frame t is state t), and two probes are fitted on
90 % of the episodes and scored on the other 10 % (the split ``train-sft --seed 0`` uses):

* **features**: a head of the policy's own design (``KeypointTrunk``: CoordConv + FiLM(instruction)
  convolutions -> spatial-softmax keypoints -> MLP) regresses the pusher's, the target's and the
  goal's (x, y) from one frame's frozen features (the instruction says which block is the target
  and where the goal is). Its error bounds what a head on these features can know.
* **policy** (with RUN, a ``train-sft`` run or exported model dir; CHECKPOINT default
  policy.safetensors, or reward_model.safetensors): a ridge regression from the trained network's
  last hidden layer (the z the action head and the Stage-2 tilt read) to the same
  positions: what the BC-trained policy does know.

* **joint head** (``--joint-head``): on the same z, the BC NLL of the run's own action head (one
  categorical per action dimension, independent given z) against two heads refitted on z over the
  training split: independent per dimension again, and one categorical over every combination of
  the tokens (the joint the paper's autoregressive decoder can represent). How much of BC's loss is
  the factorisation, not what z knows.

Errors are RMSE in cm on the 50 cm table, next to a constant prediction's.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

PARTS = ("pusher", "target", "goal")


def true_positions(n: int, lengths: np.ndarray) -> np.ndarray:
    """(ΣT+1, 6) cm: pusher, target, goal (x, y) of every frame of the first ``n`` demos."""
    from efm_ros.learn.tablestate import demonstrations

    eps = demonstrations(n, seed=0)
    got = np.array([len(e.states) - 1 for e in eps])
    if not np.array_equal(got, lengths):
        raise SystemExit(f"replayed demonstrations do not match the cache's episodes (first difference at "
                         f"{int(np.argmax(got != lengths))}): is the cache from collect-demos --seed 0 with the defaults?")
    return np.concatenate([e.states[:, :6] for e in eps]) * 50.0


def rmse(pred: np.ndarray, true: np.ndarray) -> list[float]:
    err = (pred - true).reshape(len(true), 3, 2)
    return [float(np.sqrt((err[:, i] ** 2).sum(-1).mean())) for i in range(3)]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    run_episodes = None
    joint = "--joint-head" in argv
    argv = [a for a in argv if a != "--joint-head"]
    if "--held-out-of" in argv:
        i = argv.index("--held-out-of")
        run_episodes = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    from efm_ros.learn.features import _load, frame_pairs
    from efm_ros.learn.sft import embed_instructions, split_episodes
    from efm_ros.model.network import EFMConfig, KeypointTrunk

    torch.manual_seed(0)
    torch.set_num_threads(2)
    fs = _load(Path(argv[0]))
    y = true_positions(len(fs), fs.lengths)
    table = embed_instructions(sorted(set(fs.instructions)), Path(argv[0]).parent / "instructions.npz")
    cur, prev, frame_ep, frame_t = frame_pairs(fs.starts, fs.lengths, include_last=True)   # every frame, in the order of y
    text = table.lookup([fs.instructions[e] for e in frame_ep]).astype(np.float32)
    train_eps, val_eps = split_episodes(run_episodes or len(fs), 0.1, 0)   # the split train-sft --seed 0 made
    train_eps, val_eps = train_eps[train_eps < len(fs)], val_eps[val_eps < len(fs)]
    tr, va = np.isin(frame_ep, train_eps), np.isin(frame_ep, val_eps)
    mean, std = y[tr].mean(0), y[tr].std(0)
    print(f"{len(fs)} episodes, {len(y)} frames ({tr.sum()} train / {va.sum()} val), features {fs.features.shape[1:]}")
    print(f"constant prediction, RMSE cm (pusher, target, goal): {np.round(rmse(np.broadcast_to(mean, y[va].shape), y[va]), 2).tolist()}")

    if len(argv) > 1 and joint:
        return joint_head_probe(argv, fs, text, tr, va, cur, prev, frame_ep, frame_t)
    if len(argv) > 1:
        return policy_probe(argv, fs, y, text, tr, va, cur, prev)
    probe = KeypointTrunk(EFMConfig(dropout=0.0, prev_dropout=0.0), fs.features.shape[1:])
    probe.action_head, probe.action_shape = nn.Linear(probe.action_head.in_features, 6), (6,)
    feats = torch.from_numpy(fs.features[cur])
    t, target = torch.from_numpy(text), torch.from_numpy(((y - mean) / std).astype(np.float32))
    opt = torch.optim.AdamW(probe.parameters(), 1e-3)
    idx_tr, idx_va = np.flatnonzero(tr), np.flatnonzero(va)
    rng = np.random.default_rng(0)
    steps = 3000
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        b = torch.from_numpy(rng.choice(idx_tr, 128))
        pred = probe(feats[b], feats[b], t[b])[0]
        loss = (pred - target[b]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"  step {step + 1}: train loss {loss.item():.4f}", flush=True)
    probe.eval()
    with torch.no_grad():
        pred = torch.cat([probe(feats[i], feats[i], t[i])[0] for i in torch.from_numpy(idx_va).split(1024)]).numpy()
    print(f"features probe (KeypointTrunk, {steps} steps), val RMSE cm (pusher, target, goal): "
          f"{np.round(rmse(pred * std + mean, y[va]), 2).tolist()}")
    return 0


def hidden_layer(argv, fs, text, cur, prev):
    """(trunk, z (F, hidden) float32): the run's z of every frame pair, the layer both heads (and the Stage-2 tilt) read."""
    from efm_ros.model.network import load_checkpoint

    feats, t = torch.from_numpy(fs.features), torch.from_numpy(text)
    trunk = load_checkpoint(Path(argv[1]) / (argv[2] if len(argv) > 2 else "policy.safetensors")).eval().trunk
    with torch.no_grad():
        z = torch.cat([trunk.hidden(trunk.feature_map(feats[torch.from_numpy(cur[i])], feats[torch.from_numpy(prev[i])],
                                                      t[i]), t[i])
                       for i in np.array_split(np.arange(len(cur)), max(1, len(cur) // 1024))])
    return trunk, z


def policy_probe(argv, fs, y, text, tr, va, cur, prev) -> int:
    z = hidden_layer(argv, fs, text, cur, prev)[1].numpy().astype(np.float64)
    z = np.hstack([z, np.ones((len(z), 1))])
    a = z[tr].T @ z[tr] + 1.0 * np.eye(z.shape[1])
    w = np.linalg.solve(a, z[tr].T @ y[tr])
    print(f"policy probe (ridge on {argv[1]} {argv[2] if len(argv) > 2 else 'policy'}'s last hidden layer, "
          f"{z.shape[1] - 1} units), val RMSE cm "
          f"(pusher, target, goal): {np.round(rmse(z[va] @ w, y[va]), 2).tolist()}")
    return 0


def joint_head_probe(argv, fs, text, tr, va, cur, prev, ep, t, steps: int = 4000) -> int:
    trunk, z = hidden_layer(argv, fs, text, cur, prev)
    acts = t < fs.lengths[ep]                                   # frames with an action (not the goal frame)
    y = torch.from_numpy(fs.tokens[fs.token_starts[ep[acts]] + t[acts]])
    z, tr, va = z[torch.from_numpy(acts)], np.flatnonzero(tr[acts]), np.flatnonzero(va[acts])
    dims, bins = trunk.action_shape

    def nll(logits, tokens, joint: bool):
        if joint:
            flat = (tokens * bins ** torch.arange(dims - 1, -1, -1)).sum(-1)
            return -torch.log_softmax(logits, -1).gather(-1, flat[:, None]).squeeze(-1)
        return -torch.log_softmax(logits.unflatten(-1, (dims, bins)), -1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)

    with torch.no_grad():
        own = nll(trunk.action_head(z), y, False)
    print(f"the run's own head (independent per dimension): val NLL {own[va].mean():.3f} (train {own[tr].mean():.3f})")
    for joint in (False, True):
        head = nn.Linear(z.shape[1], bins ** dims if joint else dims * bins)
        opt = torch.optim.AdamW(head.parameters(), 3e-3, weight_decay=1e-4)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            b = torch.from_numpy(rng.choice(tr, 512))
            loss = nll(head(z[b]), y[b], joint).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = nll(head(z), y, joint)
        print(f"refitted on z, {'joint over all ' + str(bins ** dims) + ' token combinations' if joint else 'independent per dimension'}: "
              f"val NLL {out[va].mean():.3f} (train {out[tr].mean():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
