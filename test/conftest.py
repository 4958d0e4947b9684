"""Test-wide set-up: every test run gets its own isolated ROS 2 world on loopback.

Environment is set at import time, before any test imports rclpy, and is inherited by the
node processes the end-to-end tests start.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A random domain per run keeps concurrent test runs (and CI jobs) from seeing each other;
# LOCALHOST keeps discovery on loopback; LARGE_DATA makes big images reliable over Fast DDS.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
_LOG_DIR = tempfile.mkdtemp(prefix="efm_ros_test_roslog_")
os.environ.setdefault("ROS_LOG_DIR", _LOG_DIR)


def clean_fastdds_shm() -> None:
    """Remove Fast DDS shared-memory segments left by killed processes (needs psutil)."""
    fastdds = Path(sys.executable).with_name("fastdds")
    if fastdds.exists():
        env = dict(os.environ, PATH=f"{fastdds.parent}{os.pathsep}{os.environ.get('PATH', '')}")
        subprocess.run([str(fastdds), "shm", "clean"], env=env, capture_output=True, timeout=60, check=False)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001 (pytest hook signature)
    clean_fastdds_shm()
    shutil.rmtree(_LOG_DIR, ignore_errors=True)


@pytest.fixture
def rclpy_context():
    """An initialised, isolated rclpy context; shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, args=["--ros-args", "--disable-external-lib-logs"])
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


@pytest.fixture
def python_env() -> dict[str, str]:
    """Environment for child Python processes (same venv, same isolated ROS domain)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def sim_model_dir(tmp_path_factory):
    """An exported model (random trunk, pretrained backbone) that knows every embedded-robot
    instruction (random unit embeddings): for testing the plumbing of the live graph."""
    import json

    import numpy as np
    import torch

    from efm_ros.model.export import main as export_main
    from efm_ros.model.network import EFM, EFMConfig, save_checkpoint
    from efm_ros.model.text import InstructionTable
    from efm_ros.sim.instructions import all_instructions

    run = tmp_path_factory.mktemp("sim_run")
    torch.manual_seed(0)
    efm = EFM(EFMConfig()).eval()
    (run / "config.json").write_text(json.dumps(efm.config.to_dict()))
    save_checkpoint(efm, run / "policy.safetensors")
    save_checkpoint(efm, run / "reward_model.safetensors")
    (run / "train_meta.json").write_text(json.dumps({
        "data_hash": "sha256:test", "metrics": {}, "success_threshold": 2.0, "success_k": 2, "control_rate_hz": 10.0}))
    texts = all_instructions()
    emb = np.random.default_rng(0).normal(size=(len(texts), 384)).astype(np.float32)
    InstructionTable(dict(zip(texts, emb / np.linalg.norm(emb, axis=1, keepdims=True)))).save(run / "instructions.npz")
    out = tmp_path_factory.mktemp("sim_models") / "v0001"
    assert export_main([str(run), "--out", str(out)]) == 0
    return out
