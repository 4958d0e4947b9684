"""Per-parameter signal-to-noise of the Stage-2 gradient on one on-policy buffer (ladder rung a).

    .venv/bin/python tools/grad_snr.py [MODEL_DIR] [EPISODES] [SEED]     # defaults: models/efm_sft 24 0

Rolls out EPISODES Block2Block episodes of MODEL_DIR with the privileged oracle B (experiment code,
`learn/oracle.py`), fills the Improver's buffer with oracle returns, and computes the REINFORCE
gradient of 32 minibatches of B = 64 (the paper's loss and batch). Per head parameter i:
SNR_i = |mean_b g_bi| / std_b g_bi, for one minibatch. Prints the distribution for the real
returns and for the same returns shuffled across the buffer (no action-return link), and how
much of one Adam sign step (lr per parameter) falls on parameters whose gradient is mostly noise.
"""
from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch

from efm_ros.learn.actors import rollout
from efm_ros.learn.improve import RETURN_TRANSFORMS, Improver, ImproveConfig, _Head
from efm_ros.learn.objectives import action_log_prob, reinforce_loss
from efm_ros.learn.oracle import OracleStepsToGo, oracle_d_of
from efm_ros.model.runtime import load_model
from efm_ros.sim.tabletop import TabletopRobot


def minibatch_gradients(head, data, returns, batches: int, batch_size: int, c: float, rng) -> np.ndarray:
    params = [p for p in head.parameters() if p.requires_grad]
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}
    rets = torch.from_numpy(returns.astype(np.float32))
    out = []
    for _ in range(batches):
        idx = torch.from_numpy(rng.choice(len(rets), batch_size, replace=False))
        logits = head(t["features_cur"][idx].float(), t["features_prev"][idx].float(), t["text"][idx])
        loss = reinforce_loss(action_log_prob(logits, t["tokens"][idx]), rets[idx], c=c)
        grads = torch.autograd.grad(loss, params)
        out.append(torch.cat([g.reshape(-1) for g in grads]).numpy())
    return np.stack(out)


def summary(name: str, g: np.ndarray) -> None:
    snr = np.abs(g.mean(0)) / (g.std(0) + 1e-30)
    print(f"{name:9s} params {g.shape[1]:,}  SNR median {np.median(snr):.3f}  p90 {np.quantile(snr, 0.9):.3f}  "
          f"share SNR > 0.5: {np.mean(snr > 0.5):.3f}  > 1: {np.mean(snr > 1):.3f}  "
          f"|g| median {np.median(np.abs(g)):.2e}")


def oracle_buffer(model_dir: str, episodes: int, seed: int, out: str, gamma: float = 0.9):
    """EPISODES Block2Block rollouts of MODEL_DIR with oracle B and oracle termination, added to a
    fresh Improver's buffer (oracle returns, discount gamma). Returns (improver, the ONNX policy,
    [(index, episode)] of the episodes the buffer used). Shared by the ladder's probes in tools/."""
    torch.manual_seed(seed)
    policy = load_model(model_dir)
    robot = TabletopRobot(seed=seed, families=("block2block",))
    oracle = OracleStepsToGo(robot, "approach")
    imp = Improver(model_dir, model_dir, out, ImproveConfig(gamma=gamma), reward_source=oracle_d_of)
    used = []
    for i in range(episodes):
        ep = rollout(robot, policy, policy, seed=10_000 * (seed + 1) + i, episode_id=f"probe_{i:03d}",
                     oracle=oracle, stop_on_oracle=True)
        if imp.add_episode(ep) == "used":
            used.append((i, ep))
    return imp, policy, used


def main(argv: list[str]) -> int:
    model_dir = argv[0] if argv else "models/efm_sft"
    episodes = int(argv[1]) if len(argv) > 1 else 24
    seed = int(argv[2]) if len(argv) > 2 else 0
    with tempfile.TemporaryDirectory() as out:
        imp, _, _ = oracle_buffer(model_dir, episodes, seed, out)
        data = imp.buffer.arrays()
        head = _Head(imp.policy)
        cfg = imp.config
        print(f"{model_dir}: {episodes} episodes, {len(data['tokens'])} transitions, "
              f"mean return {data['returns'].mean():+.2f} (std {data['returns'].std():.2f})")
        rng = np.random.default_rng(seed)
        for name in ("paper", "shuffled"):
            returns = RETURN_TRANSFORMS[name](np.asarray(data["returns"], np.float64))
            summary(name, minibatch_gradients(head, data, returns, 32, cfg.batch_size, cfg.c, rng))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
