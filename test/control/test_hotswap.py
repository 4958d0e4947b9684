"""Model hot-swap without ROS: which version wins, what is refused, and that swaps are atomic."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from efm_ros.control.hotswap import HotSwapper, ModelSlot, list_candidates, version_key
from efm_ros.model.bins import ActionBins, StepsToGoBins
from efm_ros.model.manifest import io_spec, verify_manifest, write_manifest


def make_version(root: Path, name: str, version: str | None = None) -> Path:
    """A model directory whose manifest verifies (placeholder graph files: the fake loader only
    verifies), written atomically like efm_ros.model.export: hidden temp dir, then rename."""
    tmp = root / f".{name}.tmp"
    tmp.mkdir(parents=True)
    for f in ("policy.onnx", "reward.onnx", "instructions.npz"):
        (tmp / f).write_bytes(f"{name}/{f}".encode() * 100)
    spec = {"inputs": [io_spec("frame", ["batch", 8, 8, 3], "uint8")],
            "outputs": [io_spec("action_logits", ["batch", 2, 5], "float32")]}
    write_manifest(tmp, model_version=version or name,
                   graphs={"policy": {"file": "policy.onnx", **spec}, "reward": {"file": "reward.onnx", **spec}},
                   efm_config={"image_size": 8}, action_bins=ActionBins(2, 5, -1.0, 1.0),
                   stg_bins=StepsToGoBins(10, 5), success_threshold=1.0, success_k=2, control_rate_hz=10.0,
                   data_hash="test", metrics={}, instructions_file="instructions.npz", instruction_count=1,
                   embedding_dim=4, encoder="test")
    tmp.rename(root / name)
    return root / name


def corrupt(model_dir: Path) -> None:
    (model_dir / "policy.onnx").write_bytes(b"flipped bits")


def fake_loader(path: Path):
    """Verifies like load_model (raises ManifestError) without building ONNX sessions."""
    manifest = verify_manifest(path)
    return SimpleNamespace(version=manifest["model_version"], model_dir=path)


def test_version_order_is_natural():
    names = ["v10", "v9", "v0011", "iter_2", "iter_10", "v1"]
    assert sorted(names, key=version_key) == ["iter_2", "iter_10", "v1", "v9", "v10", "v0011"]
    assert version_key("v002") == version_key("v2")


def test_newest_complete_version_wins_half_written_and_corrupt_are_ignored(tmp_path):
    for name in ("v0001", "v0002", "v0010"):
        make_version(tmp_path, name)
    (tmp_path / "v0011").mkdir()                               # half-written in place: no manifest yet
    (tmp_path / "v0011" / "policy.onnx").write_bytes(b"partial")
    corrupt(make_version(tmp_path, "v0012"))                   # manifest does not verify
    (tmp_path / ".v0013.x8k2").mkdir()                         # an export in progress
    (tmp_path / "notes.txt").write_text("not a version")

    candidates, incomplete = list_candidates(tmp_path)
    assert [c.version for c in candidates] == ["v0001", "v0002", "v0010", "v0012"]
    assert incomplete == ["v0011"]

    logs = []
    swapper = HotSwapper(fake_loader, watch_dir=tmp_path, log=lambda level, msg: logs.append((level, msg)))
    model = swapper.load_initial(model_dir=None)
    assert model.version == "v0010" and swapper.slot.current is model
    assert swapper.counts["rejected"] == 1 and swapper.counts["loaded"] == 1
    assert [m for lvl, m in logs if lvl == "error" and "v0012" in m], logs
    # the refused directory is not looked at again while it is unchanged
    assert swapper.poll_once() is None
    assert swapper.counts["rejected"] == 1
    # ... but once the trainer rewrote it correctly it wins
    shutil.rmtree(tmp_path / "v0012")
    make_version(tmp_path, "v0012")
    assert swapper.poll_once().version == "v0012"
    # the half-written one completes (manifest written last) -> not newer than v0012: not loaded
    shutil.rmtree(tmp_path / "v0011")
    make_version(tmp_path, "v0011")
    assert swapper.poll_once() is None
    assert swapper.status()["versions_rejected"] == 1


def test_manifest_version_orders_before_directory_name(tmp_path):
    make_version(tmp_path, "b_dir", version="v0003")
    make_version(tmp_path, "z_dir", version="v0002")
    assert HotSwapper(fake_loader, watch_dir=tmp_path).load_initial(None).version == "v0003"


def test_initial_load_falls_back_to_model_dir_and_fails_clearly(tmp_path):
    models, watch = tmp_path / "models", tmp_path / "watch"
    watch.mkdir()
    base = make_version(models, "sft")
    assert HotSwapper(fake_loader, watch_dir=watch).load_initial(base).version == "sft"
    with pytest.raises(ValueError, match="missing"):
        HotSwapper(fake_loader).load_initial(models / "nope")
    corrupt(base)
    with pytest.raises(ValueError, match="sha256"):
        HotSwapper(fake_loader, watch_dir=watch).load_initial(base)
    with pytest.raises(ValueError, match="model_dir is empty"):
        HotSwapper(fake_loader, watch_dir=watch).load_initial("")


def test_background_thread_finds_new_versions_and_refuses_corrupt_ones(tmp_path):
    models, watch = tmp_path / "models", tmp_path / "watch"
    watch.mkdir()
    swapper = HotSwapper(fake_loader, watch_dir=watch, period_s=0.02)
    swapper.load_initial(make_version(models, "sft"))
    swapper.start()
    try:
        make_version(watch, "v0001")
        deadline = time.monotonic() + 5
        while swapper.slot.pending is None and time.monotonic() < deadline:
            time.sleep(0.01)
        model, replaced = swapper.slot.take()
        assert (model.version, replaced.version) == ("v0001", "sft")

        bad = make_version(watch, "v0002")
        corrupt(bad)
        swapper.rescan()
        deadline = time.monotonic() + 5
        while swapper.counts["rejected"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)                                        # several more scans
        assert swapper.counts["rejected"] == 1                 # refused once, not once per scan
        assert swapper.slot.take() == (model, None)            # the current one keeps running

        # an operator's explicit model_dir is loaded and stays until a newer version appears
        swapper.request(models / "sft")
        deadline = time.monotonic() + 5
        while swapper.slot.pending is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert swapper.slot.take()[0].version == "sft"
        time.sleep(0.1)
        assert swapper.slot.pending is None                    # v0001 is not "newer": no flip back
        make_version(watch, "v0003")
        deadline = time.monotonic() + 5
        while swapper.slot.pending is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert swapper.slot.take()[0].version == "v0003"
        # a request for something broken is refused; nothing is offered
        swapper.request(bad)
        time.sleep(0.1)
        assert swapper.slot.pending is None and swapper.counts["rejected"] == 2
    finally:
        swapper.stop()
    assert not any(t.name == "model-watcher" for t in threading.enumerate())


def test_swap_is_atomic_for_the_reader():
    """The control loop sees whole models only, in the order they were offered, and keeps the
    model of a tick for the whole tick."""
    class Model:
        def __init__(self, i):
            self.version, self.weights = i, [i] * 64

    slot = ModelSlot(Model(0))
    n = 2000
    seen, errors = [], []

    def control_loop():
        while True:
            model, _ = slot.take()                             # the swap point
            for w in model.weights:                            # "mid-tick": always this model
                if w != model.version:
                    errors.append((model.version, w))
            seen.append(model.version)
            if model.version == n:
                return

    reader = threading.Thread(target=control_loop)
    reader.start()
    for i in range(1, n + 1):
        slot.offer(Model(i))
        if i % 100 == 0:
            time.sleep(0.001)
    reader.join(timeout=30)
    assert not reader.is_alive() and not errors
    assert seen == sorted(seen) and seen[-1] == n              # never backwards, ends on the last one
    assert slot.take()[1] is None                              # nothing left pending


def test_listing_tolerates_missing_watch_dir_and_bad_manifests(tmp_path):
    assert list_candidates(tmp_path / "absent") == ([], [])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text("{not json")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({"model_version": 3}))
    assert list_candidates(tmp_path) == ([], ["a", "b"])
