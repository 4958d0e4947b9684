"""Export (ONNX + manifest) and the torch-free ONNX Runtime loader."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from efm_ros.model.manifest import ManifestError, verify_manifest
from efm_ros.model.network import random_inputs
from efm_ros.model.runtime import load_model
from efm_ros.model.text import UnknownInstructionError

INSTRUCTIONS = ("push the red block to the blue block", "push the green block to the top left corner")  # = conftest's

LOGIT_TOL = 1e-4      # max |ORT - torch| on logits (measured ~2e-7)
STEPS_TOL = 1e-4      # on d(o, g) in steps (measured ~8e-6)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, providers=["CPUExecutionProvider"], intra_op_threads=1)


def test_manifest_contents(model_dir, model):
    m = verify_manifest(model_dir)
    assert sorted(model.instructions) == sorted(INSTRUCTIONS)
    assert set(m["files"]) == {"policy.onnx", "reward.onnx", "instructions.npz", "policy.safetensors",
                               "reward_model.safetensors", "backbone.onnx", "policy_head.onnx", "reward_head.onnx"}
    assert m["model_version"] == "v001"
    assert m["success"] == {"threshold_steps": 2.0, "consecutive": 3}
    assert m["control_rate_hz"] == 5.0 and m["training"]["data_hash"] == "sha256:test"
    assert m["training"]["metrics"] == {"bc_val_loss": 1.25, "stg_val_loss": 2.5} and m["training"]["stage"] == 1
    assert m["action_bins"]["num_bins"] == 21 and len(m["steps_to_go_bins"]["values"]) == 50
    assert [i["name"] for i in m["graphs"]["policy"]["inputs"]] == ["frame", "prev_frame", "instruction_embedding"]
    assert m["graphs"]["reward"]["outputs"][-1] == {"name": "expected_steps", "shape": ["batch"], "dtype": "float32"}
    assert max(m["export"]["parity_max_abs_diff"].values()) < LOGIT_TOL


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_matches_torch_on_both_heads(model, efm, reward_efm, batch):
    frame, prev, _ = random_inputs(efm.config, batch, seed=10 + batch)
    texts = [INSTRUCTIONS[i % 2] for i in range(batch)]
    emb = torch.from_numpy(model.embed(texts))
    with torch.no_grad():
        a_ref, _ = efm(frame, prev, emb)
        _, s_ref = reward_efm(frame, prev, emb)
        d_ref = (s_ref.softmax(-1) * efm.stg_values).sum(-1)
    a = model.action_logits(frame.numpy(), prev.numpy(), texts)
    d, dist = model.steps_to_go(frame.numpy(), prev.numpy(), texts)
    stg_logits = model._run("reward", ["stg_logits"], frame.numpy(), prev.numpy(), texts)[0][0]
    assert np.abs(a - a_ref.numpy()).max() < LOGIT_TOL
    assert np.abs(stg_logits - s_ref.numpy()).max() < LOGIT_TOL
    assert np.abs(d - d_ref.numpy()).max() < STEPS_TOL
    assert np.allclose(dist.sum(-1), 1.0, atol=1e-5)


def test_act_samples_valid_tokens_with_exact_log_prob(model):
    rng = np.random.default_rng(0)
    f, p = (rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(2))
    probs = model._run("policy", ["action_probs"], f, p, INSTRUCTIONS[0])[0][0][0]
    seen = set()
    for _ in range(50):
        action, tokens, log_prob, entropy = model.act(f, p, INSTRUCTIONS[0], rng)
        assert tokens.shape == (2,) and tokens.dtype == np.int64 and ((0 <= tokens) & (tokens < 21)).all()
        assert np.array_equal(action, model.action_bins.decode(tokens))
        # log π(a) = log(p_0[a_0] · p_1[a_1])
        assert log_prob == pytest.approx(np.log(probs[0, tokens[0]] * probs[1, tokens[1]]), abs=1e-5)
        assert entropy == pytest.approx(-(probs * np.log(probs)).sum(), abs=1e-4)
        seen.add(tuple(tokens))
    assert len(seen) > 1                                          # it samples, it is not argmax
    greedy = model.act(f, p, INSTRUCTIONS[0], greedy=True)[1]
    assert greedy.tolist() == probs.argmax(-1).tolist()
    b_action, b_tokens, b_lp, b_h = model.act(np.stack([f, f]), np.stack([p, p]), INSTRUCTIONS[0], rng)
    assert b_action.shape == (2, 2) and b_tokens.shape == (2, 2) and b_lp.shape == (2,) and b_h.shape == (2,)


def test_unknown_instruction_and_bad_frames(model):
    frame = np.zeros((96, 96, 3), np.uint8)
    with pytest.raises(UnknownInstructionError, match="not in the instruction table"):
        model.steps_to_go(frame, frame, "push the banana to the left")
    with pytest.raises(ValueError, match="uint8"):
        model.act(frame.astype(np.float32), frame, INSTRUCTIONS[0])
    with pytest.raises(ValueError, match="shape"):
        model.act(np.zeros((64, 64, 3), np.uint8), frame, INSTRUCTIONS[0])


def test_a_node_loads_only_the_function_it_serves(model_dir, model):
    frame = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    policy = load_model(model_dir, providers=["CPUExecutionProvider"], functions=("policy",), memo=None)
    reward = load_model(model_dir, providers=["CPUExecutionProvider"], functions=["reward"], memo=None)
    assert "reward_head" not in policy.sessions and "policy_head" not in reward.sessions
    np.testing.assert_allclose(policy.action_logits(frame, frame, INSTRUCTIONS[0]),
                               model.action_logits(frame, frame, INSTRUCTIONS[0]), atol=1e-6)
    assert reward.steps_to_go(frame, frame, INSTRUCTIONS[0])[0] == pytest.approx(
        model.steps_to_go(frame, frame, INSTRUCTIONS[0])[0], abs=1e-5)
    with pytest.raises(ValueError, match="without its reward function"):
        policy.steps_to_go(frame, frame, INSTRUCTIONS[0])
    with pytest.raises(ValueError, match="without its policy function"):
        reward.act(frame, frame, INSTRUCTIONS[0])
    with pytest.raises(ValueError, match="expected some of"):
        load_model(model_dir, functions=("value",))


def test_unknown_instruction_uses_the_encoder_when_given(model_dir):
    calls = []

    def fake_encoder(texts):
        calls.append(list(texts))
        return np.full((len(texts), 384), 1 / np.sqrt(384), np.float32)

    m = load_model(model_dir, providers=["CPUExecutionProvider"], encoder=fake_encoder)
    frame = np.zeros((96, 96, 3), np.uint8)
    d, dist = m.steps_to_go(frame, frame, "push the banana to the left")
    m.steps_to_go(frame, frame, "push the banana to the left")
    assert calls == [["push the banana to the left"]] and dist.shape == (50,) and 0 <= d <= 100


def _copy(model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def test_tampered_file_is_refused_naming_it(model_dir, tmp_path):
    bad = _copy(model_dir, tmp_path)
    data = bytearray((bad / "reward.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01                                 # flip one bit of one byte
    (bad / "reward.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"^reward\.onnx: sha256"):
        load_model(bad)
    (bad / "instructions.npz").unlink()
    (bad / "reward.onnx").write_bytes((model_dir / "reward.onnx").read_bytes())
    with pytest.raises(ManifestError, match=r"instructions\.npz: listed .* but missing"):
        verify_manifest(bad)


def test_malformed_manifest_is_refused(model_dir, tmp_path):
    bad = _copy(model_dir, tmp_path)
    m = json.loads((bad / "manifest.json").read_text())
    cases = [({**m, "schema": "efm_ros.model/0"}, "schema"),
             ({k: v for k, v in m.items() if k != "success"}, "missing field success"),
             ({**m, "success": {"threshold_steps": "2", "consecutive": 3}}, "success.threshold_steps"),
             ({**m, "files": {**m["files"], "../etc/passwd": {"sha256": "0"}}}, "leaves the model directory"),
             ({**m, "graphs": {k: v for k, v in m["graphs"].items() if k != "reward_head"}}, "all or none")]
    for manifest, message in cases:
        (bad / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ManifestError, match=message):
            verify_manifest(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        verify_manifest(bad)


def test_export_refuses_to_overwrite(run_dir, model_dir):
    from efm_ros.model.export import main

    with pytest.raises(FileExistsError):
        main([str(run_dir), "--out", str(model_dir)])


def test_runtime_does_not_import_torch(model_dir):
    code = f"""
import sys
import numpy as np
from efm_ros.model.runtime import load_model
m = load_model({str(model_dir)!r})
f = np.zeros((96, 96, 3), np.uint8)
m.act(f, f, {INSTRUCTIONS[0]!r}, np.random.default_rng(0))
m.steps_to_go(f, f, {INSTRUCTIONS[0]!r})
bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers', 'sentence_transformers'))
assert not bad, bad
print('providers', m.providers)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CPUExecutionProvider" in out.stdout


def test_onnx_feature_extractor_matches_backbone_features(efm):
    from efm_ros.model.export import OnnxFeatureExtractor

    extractor = OnnxFeatureExtractor(efm, threads=1)
    frames = random_inputs(efm.config, 3, seed=5)[0]
    with torch.inference_mode():
        ref = efm.backbone_features(frames).numpy()
    got = extractor(frames.numpy())
    assert got.shape == (3, *efm.feature_shape) and np.abs(got - ref).max() < 1e-4


def test_model_dir_carries_verified_torch_checkpoints(model_dir, efm, reward_efm):
    from efm_ros.model.export import load_model_checkpoints

    policy, reward = load_model_checkpoints(model_dir)
    for a, b in ((policy, efm), (reward, reward_efm)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_stage2_version_copies_the_frozen_reward_graph_and_refuses_a_tampered_one(model_dir, tmp_path):
    """export_model(reward_from=…) (what the Stage-2 trainer does for every version): the reward
    graph and checkpoint are the verified files of the frozen model, byte for byte, not a re-export;
    the policy graph is exported and parity-checked; a damaged source is refused."""
    from efm_ros.model.export import export_model, load_model_checkpoints
    from efm_ros.model.text import InstructionTable

    policy, reward = load_model_checkpoints(model_dir)
    m = verify_manifest(model_dir)
    kw = dict(reward_model=reward, instructions=InstructionTable.load(model_dir / m["instructions"]["file"]),
              success_threshold=m["success"]["threshold_steps"], success_k=m["success"]["consecutive"],
              control_rate_hz=m["control_rate_hz"], data_hash="stage2:test", metrics={})
    out = tmp_path / "v0001"
    man = export_model(policy, out, reward_from=model_dir, **kw)
    for name in ("reward.onnx", "reward_model.safetensors", "backbone.onnx", "reward_head.onnx"):
        assert (out / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert {"action_logits", "expected_steps", "split:action_logits", "split:expected_steps", "features"} <= set(
        man["export"]["parity_max_abs_diff"])
    loaded = load_model(out)
    frame = np.zeros((96, 96, 3), np.uint8)
    assert loaded.steps_to_go(frame, frame, INSTRUCTIONS[0])[0] == load_model(model_dir).steps_to_go(frame, frame, INSTRUCTIONS[0])[0]
    bad = _copy(model_dir, tmp_path)
    data = bytearray((bad / "reward.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "reward.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="reward.onnx"):
        export_model(policy, tmp_path / "v0002", reward_from=bad, **kw)
    assert not (tmp_path / "v0002").exists()


def test_a_refreshed_policy_graph_equals_a_fresh_export_of_the_changed_weights(model_dir, tmp_path):
    """PolicyGraphTemplate (each Stage-2 version refreshes the weights of a graph traced once):
    after the weights change (trunk, norms, action head), the written graph computes what a new
    export computes, a different network is refused, and export_model still checks parity."""
    from efm_ros.model.export import PolicyGraphTemplate, export_model, export_onnx, load_model_checkpoints
    from efm_ros.model.text import InstructionTable

    policy, reward = load_model_checkpoints(model_dir)
    template = PolicyGraphTemplate(policy)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name.startswith("trunk."):
                p.add_(0.05 * torch.randn_like(p))
    template.write(policy, tmp_path / "refreshed.onnx")
    export_onnx(policy, tmp_path / "fresh", roles=("policy",))
    import onnxruntime as ort

    inputs = {n: x.numpy() for n, x in zip(("frame", "prev_frame", "instruction_embedding"),
                                           random_inputs(policy.config, 3, seed=5))}
    got = ort.InferenceSession(str(tmp_path / "refreshed.onnx")).run(["action_logits"], inputs)[0]
    want = ort.InferenceSession(str(tmp_path / "fresh" / "policy.onnx")).run(["action_logits"], inputs)[0]
    old = ort.InferenceSession(str(model_dir / "policy.onnx")).run(["action_logits"], inputs)[0]
    assert np.abs(got - want).max() < 1e-4 and np.abs(got - old).max() > 1e-2   # the new weights, not the old
    m = verify_manifest(model_dir)
    man = export_model(policy, tmp_path / "v0001", reward_model=reward, reward_from=model_dir, policy_template=template,
                       instructions=InstructionTable.load(model_dir / m["instructions"]["file"]),
                       success_threshold=m["success"]["threshold_steps"], success_k=m["success"]["consecutive"],
                       control_rate_hz=m["control_rate_hz"], data_hash="stage2:test", metrics={})
    assert man["export"]["parity_max_abs_diff"]["action_logits"] < 1e-4
    assert man["export"]["parity_max_abs_diff"]["split:action_logits"] < 1e-4   # policy_head.onnx, refreshed too
    assert template.roles == ("policy", "policy_head")
    other = type(policy)(type(policy.config).from_dict({**policy.config.to_dict(), "action_bins": policy.config.action_bins + 2}))
    with pytest.raises(ValueError, match="differs from the template"):
        template.write(other, tmp_path / "other.onnx")


def test_split_graphs_compute_the_full_graphs_function_with_one_backbone_pass_per_frame(model_dir):
    """The runtime's split path (backbone.onnx once per distinct frame, then a head) gives what the
    full graphs give, and along an episode the policy and the reward model of one process share
    every frame's features: one backbone pass per tick, not four."""
    import onnxruntime as ort

    from efm_ros.model.runtime import FeatureMemo

    memo = FeatureMemo(capacity=8)
    policy, reward = (load_model(model_dir, providers=["CPUExecutionProvider"], memo=memo) for _ in range(2))
    assert policy.split and reward.split and policy.backbone_id == reward.backbone_id
    full = {r: ort.InferenceSession(str(model_dir / f"{r}.onnx"), providers=["CPUExecutionProvider"])
            for r in ("policy", "reward")}
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    emb = policy.embed(INSTRUCTIONS[1])
    for t in range(len(frames)):
        prev = frames[max(t - 1, 0)]
        feed = {"frame": frames[t][None], "prev_frame": prev[None], "instruction_embedding": emb}
        want_logits = full["policy"].run(["action_logits"], feed)[0]
        want_d = full["reward"].run(["expected_steps"], feed)[0][0]
        assert np.abs(policy.action_logits(frames[t], prev, INSTRUCTIONS[1]) - want_logits).max() < LOGIT_TOL
        assert abs(reward.steps_to_go(frames[t], prev, INSTRUCTIONS[1])[0] - want_d) < STEPS_TOL
    assert memo.misses == len(frames) and memo.hits == 4 * len(frames) - len(frames)
    passes = []
    backbone = reward.backbone
    reward.backbone = lambda batch: passes.append(len(batch)) or backbone(batch)
    d_batch, _ = reward.steps_to_go(frames[1:], frames[:-1], INSTRUCTIONS[1])   # batched: no memo, same numbers
    assert memo.misses == len(frames) and passes == [len(frames)]     # 8 frames in the call, 5 distinct
    assert np.abs(d_batch - [reward.steps_to_go(frames[t], frames[t - 1], INSTRUCTIONS[1])[0]
                             for t in range(1, len(frames))]).max() < STEPS_TOL
    changed = frames[4].copy()
    changed[0, 0, 0] ^= 1                                          # one bit: another frame, not a hit
    reward.steps_to_go(changed, changed, INSTRUCTIONS[1])
    assert memo.misses == len(frames) + 1 and len(memo._items) <= memo.capacity


def test_a_policy_with_its_own_backbone_gets_no_split_graphs_and_still_serves(run_dir, efm, reward_efm, tmp_path):
    """Split graphs need one frozen backbone for both checkpoints; a policy whose backbone differs
    (fine-tuned apart) is exported as the two full graphs, and the runtime serves it from them."""
    from efm_ros.model.export import export_model, shares_backbone
    from efm_ros.model.network import EFM
    from efm_ros.model.text import InstructionTable

    policy = EFM(efm.config, load_weights=False)
    policy.load_state_dict(efm.state_dict())
    with torch.no_grad():
        next(policy.backbone.parameters()).add_(0.01)
    assert shares_backbone(efm, reward_efm) and not shares_backbone(policy, reward_efm)
    table = InstructionTable.load(run_dir / "instructions.npz")
    man = export_model(policy.eval(), tmp_path / "own", reward_model=reward_efm, instructions=table,
                       success_threshold=2.0, success_k=1, control_rate_hz=5.0, data_hash="t", metrics={})
    assert set(man["graphs"]) == {"policy", "reward"} and "backbone.onnx" not in man["files"]
    served = load_model(tmp_path / "own", providers=["CPUExecutionProvider"])
    assert not served.split
    frame, prev, _ = random_inputs(policy.config, 1, seed=4)
    emb = served.embed(INSTRUCTIONS[0])
    with torch.no_grad():
        want, _ = policy(frame, prev, torch.from_numpy(emb))
    assert np.abs(served.action_logits(frame.numpy(), prev.numpy(), INSTRUCTIONS[0]) - want.numpy()).max() < LOGIT_TOL
    with pytest.raises(ValueError, match="no split graphs"):
        served.backbone(frame.numpy())
    # a Stage-2 version judged by a frozen model without split graphs gets none either (no backbone
    # export on every version's critical path), and still serves
    version = export_model(efm, tmp_path / "v0001", reward_model=reward_efm, reward_from=tmp_path / "own",
                           instructions=table, success_threshold=2.0, success_k=1, control_rate_hz=5.0,
                           data_hash="t", metrics={})
    assert set(version["graphs"]) == {"policy", "reward"}
    assert not load_model(tmp_path / "v0001").split


def test_a_model_directory_exports_again_with_its_own_facts(model_dir, tmp_path):
    """``efm-ros export MODEL_DIR --out NEW`` (e.g. to add the split graphs to an older model): the
    same version, training facts, success rule and weights, verified like any export."""
    from efm_ros.model.export import load_model_checkpoints, main

    out = tmp_path / "again"
    assert main([str(model_dir), "--out", str(out)]) == 0
    old, new = verify_manifest(model_dir), verify_manifest(out)
    assert new["model_version"] == old["model_version"] == "v001"
    assert new["training"] == old["training"] and new["success"] == old["success"]
    assert new["control_rate_hz"] == old["control_rate_hz"] and set(new["files"]) == set(old["files"])
    for a, b in zip(load_model_checkpoints(model_dir), load_model_checkpoints(out)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_export_sets_the_success_point_by_hand_and_keeps_the_calibrated_one(model_dir, tmp_path):
    """``--success S K`` (a point chosen on the policy's marked rollouts): the manifest's success
    rule is (S, K), the runtime's detector uses it, the calibrated point stays on record, and a
    point that no detector can hold (negative s, k < 1, a fractional k) is refused."""
    from efm_ros.model.export import main
    from efm_ros.model.runtime import load_model

    old = verify_manifest(model_dir)
    out = tmp_path / "recalibrated"
    assert main([str(model_dir), "--out", str(out), "--success", "3.25", "2"]) == 0
    new = verify_manifest(out)
    assert (new["success"]["threshold_steps"], new["success"]["consecutive"]) == (3.25, 2)
    assert new["training"]["success_override"]["calibrated"] == {
        "threshold_steps": old["success"]["threshold_steps"], "consecutive": old["success"]["consecutive"]}
    m = load_model(out)
    assert (m.success_threshold, m.success_k) == (3.25, 2)
    assert bool(m.is_success(3.0)) and not bool(m.is_success(3.5))
    for bad in (["-1", "1"], ["2", "0"], ["2", "1.5"], ["nan", "1"]):
        with pytest.raises(ValueError, match="success point"):
            main([str(model_dir), "--out", str(tmp_path / "bad"), "--success", *bad])
