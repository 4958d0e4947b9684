"""Shared, expensive fixtures for the model tests: networks and ONE exported model directory."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from efm_ros.model.network import EFM, EFMConfig, save_checkpoint
from efm_ros.model.text import InstructionTable

INSTRUCTIONS = ("push the red block to the blue block", "push the green block to the top left corner")


@pytest.fixture(scope="session")
def efm() -> EFM:
    """The default network (pretrained EfficientNet-Lite0 backbone), eval mode."""
    torch.manual_seed(0)
    return EFM(EFMConfig()).eval()


@pytest.fixture(scope="session")
def reward_efm() -> EFM:
    """A second checkpoint of the same network (different trunk init), as the reward model."""
    torch.manual_seed(1)
    return EFM(EFMConfig()).eval()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, efm, reward_efm):
    """A training run directory in the layout efm_ros.model.export documents."""
    run = tmp_path_factory.mktemp("run")
    (run / "config.json").write_text(json.dumps(efm.config.to_dict()))
    save_checkpoint(efm, run / "policy.safetensors")
    save_checkpoint(reward_efm, run / "reward_model.safetensors")
    meta = {"data_hash": "sha256:test", "metrics": {"bc_val_loss": 1.25, "stg_val_loss": 2.5},
            "success_threshold": 2.0, "success_k": 3, "control_rate_hz": 5.0, "stage": 1}
    (run / "train_meta.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(INSTRUCTIONS), 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    InstructionTable(dict(zip(INSTRUCTIONS, emb))).save(run / "instructions.npz")
    return run


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, run_dir):
    """``efm-ros export RUN --out DIR`` run once for the whole session."""
    from efm_ros.model.export import main

    out = tmp_path_factory.mktemp("models") / "v001"
    assert main([str(run_dir), "--out", str(out)]) == 0
    return out
