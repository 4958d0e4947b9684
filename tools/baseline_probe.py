"""How much of the Stage-2 return is predictable from the state, and does the gradient agree with itself?

    .venv/bin/python tools/baseline_probe.py [MODEL_DIR] [EPISODES] [SEED] [GAMMA]   # models/efm_sft 48 0 0.9

Experiment code for the ladder (rung a). Rolls out EPISODES Block2Block episodes of MODEL_DIR with
the privileged oracle B (`learn/oracle.py`), and computes the paper's returns R_t (γ = GAMMA). Then:

1. Explained variance of R_t by per-state baselines, cross-fitted over two halves of the episodes
   (fit on one half, score on the other): the mean return per time step; ridge regression on the
   policy's own last hidden layer (+ t); ridge on the frozen steps-to-go model's d and t.
2. Whether the REINFORCE gradient points the same way on two disjoint halves of the episodes:
   cos(g_A, g_B) of the full-half gradients, and of one minibatch (B = 64) against the other half,
   for R_t as is, for R_t minus the cross-fitted baseline, and for R_t shuffled (the null); per
   group of layers, and in the subspace of an exponential tilt of the action distribution
   (``train_layers: "tilt"``, :class:`efm_ros.learn.improve.ActionTilt`), where the cosine is
   also averaged over 20 random halvings (the subspace has few effective dimensions, so one draw
   of the null says little).
A variance-reduction lever is worth building only if it raises these cosines above the null.
"""
from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch

from grad_snr import oracle_buffer   # tools/ is on sys.path when this runs as a script

from efm_ros.learn.calibrate import previous_frames
from efm_ros.learn.improve import RETURN_TRANSFORMS, _Head
from efm_ros.learn.objectives import action_log_prob, reinforce_loss


def ridge_fit_predict(x_fit, y_fit, x_new, alpha: float = 1.0):
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-8
    a, b = (x_fit - mu) / sd, (x_new - mu) / sd
    a1, b1 = np.c_[a, np.ones(len(a))], np.c_[b, np.ones(len(b))]
    w = np.linalg.solve(a1.T @ a1 + alpha * np.eye(a1.shape[1]), a1.T @ (y_fit - y_fit.mean()))
    return b1 @ w + y_fit.mean()


def cross_fit(x, y, half):
    pred = np.empty_like(y)
    for h in (0, 1):
        pred[half == h] = ridge_fit_predict(x[half != h], y[half != h], x[half == h], alpha=10.0)
    return pred


def explained(y, pred) -> float:
    return 1.0 - np.var(y - pred) / np.var(y)


def gradient(head, t, idx, returns, c) -> np.ndarray:
    params = [p for p in head.parameters() if p.requires_grad]
    idx = torch.from_numpy(idx)
    logits = head(t["features_cur"][idx].float(), t["features_prev"][idx].float(), t["text"][idx])
    loss = reinforce_loss(action_log_prob(logits, t["tokens"][idx]), torch.from_numpy(returns[idx].astype(np.float32)), c=c)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).numpy()


def tilt_projection(head, names, offsets):
    """The gradient w.r.t. an exponential tilt of each action dimension's categorical (logit_k +=
    β_1·c_k + β_2·c_k², β = V·[h, 1]): the action head's weight and bias gradients projected on the
    bin centres' first two (centred) powers. -> a function of the flat gradient vector."""
    w = names.index(next(n for n in names if n.endswith("action_head.weight")))
    b = names.index(next(n for n in names if n.endswith("action_head.bias")))
    dims, bins = head.efm.trunk.action_shape
    c = np.linspace(-1.0, 1.0, bins)
    phi = np.stack([c - c.mean(), c ** 2 - (c ** 2).mean()], 1)            # (K, 2)

    def project(g):
        gw = g[offsets[w]:offsets[w + 1]].reshape(dims, bins, -1)
        gb = g[offsets[b]:offsets[b + 1]].reshape(dims, bins, 1)
        return np.einsum("kj,dkh->djh", phi, np.concatenate([gw, gb], -1)).ravel()
    return project


def cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main(argv: list[str]) -> int:
    model_dir = argv[0] if argv else "models/efm_sft"
    episodes = int(argv[1]) if len(argv) > 1 else 48
    seed = int(argv[2]) if len(argv) > 2 else 0
    gamma = float(argv[3]) if len(argv) > 3 else 0.9
    with tempfile.TemporaryDirectory() as out:
        imp, policy, used = oracle_buffer(model_dir, episodes, seed, out, gamma=gamma)
        ep_of, step_of, d_learned, success = [], [], [], []
        for i, ep in used:
            T = ep.num_steps
            ep_of += [i] * T
            step_of += list(range(T))
            d_learned += list(np.asarray(policy.steps_to_go(ep.frames, previous_frames(ep.frames), ep.instruction)[0])[:T])
            success.append(ep.outcome == "success")
        data = imp.buffer.arrays()
        R = np.asarray(data["returns"], np.float64)
        ep_of, step_of, d_learned = np.asarray(ep_of), np.asarray(step_of, np.float64), np.asarray(d_learned)
        half = ep_of % 2
        head = _Head(imp.policy)
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}
        hidden = []
        hook = imp.policy.trunk.mlp.register_forward_hook(lambda m, i, o: hidden.append(o.detach().numpy()))
        with torch.no_grad():
            for s in range(0, len(R), 1024):
                head(t["features_cur"][s:s + 1024].float(), t["features_prev"][s:s + 1024].float(), t["text"][s:s + 1024])
        hook.remove()
        z = np.concatenate(hidden)
        print(f"{model_dir}: {episodes} episodes ({np.mean(success):.0%} success), {len(R)} transitions, γ {gamma}, "
              f"R mean {R.mean():+.2f} std {R.std():.2f}")

        steps = np.minimum(step_of, 99).astype(int)
        time_mean = np.empty_like(R)
        for h in (0, 1):
            means = np.array([R[(half != h) & (steps == s)].mean() if np.any((half != h) & (steps == s)) else R[half != h].mean()
                              for s in range(100)])
            time_mean[half == h] = means[steps[half == h]]
        baselines = {
            "time-step mean": time_mean,
            "ridge(hidden, t)": cross_fit(np.c_[z, step_of], R, half),
            "ridge(learned d, t)": cross_fit(np.c_[d_learned, step_of, step_of ** 2], R, half),
        }
        for name, b in baselines.items():
            print(f"  baseline {name:22s} explains {explained(R, b):+.3f} of Var(R)")

        rng = np.random.default_rng(seed)
        ia, ib = np.flatnonzero(half == 0), np.flatnonzero(half == 1)
        variants = {"paper R": R, "R - ridge(hidden, t)": R - baselines["ridge(hidden, t)"],
                    "R - time-step mean": R - time_mean,
                    "shuffled R": RETURN_TRANSFORMS["shuffled"](R)}
        # which layers carry the signal: the same cosine restricted to groups of parameters
        names = [n for n, p in head.named_parameters() if p.requires_grad]
        sizes = [p.numel() for p in head.parameters() if p.requires_grad]
        offsets = np.cumsum([0, *sizes])
        groups = {"all": np.arange(offsets[-1])}
        for label, prefix in (("action head", "action_head."), ("mlp", "mlp."), ("perception", "")):
            idx = [np.arange(offsets[i], offsets[i + 1]) for i, n in enumerate(names)
                   if (prefix and n.split("trunk.")[-1].startswith(prefix)) or
                   (not prefix and not n.split("trunk.")[-1].startswith(("action_head.", "mlp.", "text_proj.", "stg_head.")))]
            if idx:
                groups[label] = np.concatenate(idx)
        tilt = tilt_projection(head, names, offsets)
        for name, r in variants.items():
            ga, gb = gradient(head, t, ia, r, 0.05), gradient(head, t, ib, r, 0.05)
            mb = [cos(gradient(head, t, rng.choice(ia, 64, replace=False), r, 0.05), gb) for _ in range(16)]
            per_group = "  ".join(f"{g} ({len(ix):,}) {cos(ga[ix], gb[ix]):+.3f}" for g, ix in groups.items())
            print(f"  {name:22s} cos(half A, half B) {per_group}  tilt subspace ({tilt(ga).size:,}) "
                  f"{cos(tilt(ga), tilt(gb)):+.3f}   cos(minibatch of A, half B) mean {np.mean(mb):+.3f} (sd {np.std(mb):.3f})")
        # the tilt subspace has few effective dimensions, so one null draw says little: 20 random
        # splits of the episodes into halves, for R as is and for R shuffled afresh each time
        episodes = np.unique(ep_of)
        for name, shuffle in (("paper R", False), ("shuffled R", True)):
            cs = []
            for _ in range(20):
                in_a = np.isin(ep_of, rng.permutation(episodes)[: len(episodes) // 2])
                r = rng.permutation(R) if shuffle else R
                cs.append(cos(tilt(gradient(head, t, np.flatnonzero(in_a), r, 0.05)),
                              tilt(gradient(head, t, np.flatnonzero(~in_a), r, 0.05))))
            print(f"  {name:22s} tilt-subspace cos over 20 random halvings: mean {np.mean(cs):+.3f} (sd {np.std(cs):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
