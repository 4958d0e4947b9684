"""Signed model versions (issue 13): only the trainer's key makes a version a robot will run."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from efm_ros.model.signing import (SIGNATURE_NAME, SignatureError, check_trusted, generate_key, sign_model,
                                   verify_signature)


@pytest.fixture
def model(tmp_path, sim_model_dir):
    out = tmp_path / "versions" / "v0001"
    shutil.copytree(sim_model_dir, out)
    return out


def test_a_signed_version_verifies_and_every_forgery_is_refused(tmp_path, model):
    private, public = generate_key(tmp_path / "keys")
    assert oct(os.stat(private).st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "keys")
    _, other_public = generate_key(tmp_path / "other")
    with pytest.raises(SignatureError, match="unsigned"):
        verify_signature(model, [public])
    record = sign_model(model, private)
    assert verify_signature(model, [other_public, public]) == record["key_id"]
    with pytest.raises(SignatureError, match="does not verify"):       # signed by a key the robot does not trust
        verify_signature(model, [other_public])
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["model_version"] = "v9999"                                 # a changed manifest (e.g. new file hashes)
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(model, [public])
    (model / SIGNATURE_NAME).write_text("{not json")
    with pytest.raises(SignatureError, match="unreadable"):
        verify_signature(model, [public])


def test_the_trusted_root_refuses_paths_outside_it_also_through_links(tmp_path, model):
    check_trusted(model, (), tmp_path / "versions")                     # under the root, no keys: fine
    check_trusted(model)                                                # nothing configured: nothing checked
    foreign = tmp_path / "elsewhere" / "m"
    shutil.copytree(model, foreign)
    with pytest.raises(SignatureError, match="outside the trusted model root"):
        check_trusted(foreign, (), tmp_path / "versions")
    link = tmp_path / "versions" / "looks_inside"
    link.symlink_to(foreign)
    with pytest.raises(SignatureError, match="outside"):
        check_trusted(link, (), tmp_path / "versions")


def test_export_signs_before_the_version_appears(tmp_path, sim_model_dir):
    from efm_ros.model.export import export_model, load_model_checkpoints
    from efm_ros.model.manifest import verify_manifest
    from efm_ros.model.text import InstructionTable

    private, public = generate_key(tmp_path / "keys")
    policy, reward = load_model_checkpoints(sim_model_dir)
    m = verify_manifest(sim_model_dir)
    out = tmp_path / "v0002"
    export_model(policy, out, reward_model=reward, instructions=InstructionTable.load(sim_model_dir / m["instructions"]["file"]),
                 success_threshold=1.0, success_k=1, control_rate_hz=10.0, data_hash="t", metrics={},
                 signing_key=private)
    verify_manifest(out)
    verify_signature(out, [public])
