"""``efm-ros collect-demos`` on the embedded robot: reproducible per seed (any worker count),
correct demo bags (replaying their actions reproduces their frames and succeeds), refusal to
overwrite, summary output."""
from __future__ import annotations

import numpy as np
import pytest

from efm_ros.data import list_episodes, read_episode
from efm_ros.data.collect import CollectConfig, collect_demos, episode_seed, main
from efm_ros.data.episode import CUSTOM_DATA_KEYS, DEMO_CLOCK_BASE_NS, DEMO_CLOCK_EPISODE_STRIDE_NS
from efm_ros.model.bins import ActionBins

pytest.importorskip("efm_ros.sim.demonstrator", reason="the embedded simulator is not available")


def _files(path):
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_collection_is_reproducible_per_seed_and_independent_of_workers(tmp_path):
    cfg = dict(episodes=3, image_size=32, max_steps=60)
    one = collect_demos(CollectConfig(out=str(tmp_path / "a"), seed=11, **cfg), workers=1, progress=False)
    two = collect_demos(CollectConfig(out=str(tmp_path / "b"), seed=11, **cfg), workers=2, progress=False)
    other = collect_demos(CollectConfig(out=str(tmp_path / "c"), seed=12, **cfg), workers=1, progress=False)
    assert one.episodes == two.episodes == other.episodes == 3
    a, b, c = (list_episodes(tmp_path / d) for d in "abc")
    assert [p.name for p in a] == [p.name for p in b] == ["demo_s11_e00000", "demo_s11_e00001", "demo_s11_e00002"]
    for pa, pb in zip(a, b):
        assert read_episode(pa).diff(read_episode(pb)) == []
        assert _files(pa) == _files(pb)  # byte-identical bags: synthetic clock, seeded everything
    for pa, pc in zip(a, c):
        ea, ec = read_episode(pa), read_episode(pc)
        assert ea.custom_data["seed"] != ec.custom_data["seed"]
        assert ea.num_steps != ec.num_steps or not np.array_equal(ea.frames, ec.frames)


def test_demo_bags_replay_to_the_same_frames_and_succeed(tmp_path):
    from efm_ros.sim.tabletop import TabletopRobot

    cfg = CollectConfig(out=str(tmp_path), episodes=2, seed=3, image_size=32, families=("block2location",))
    summary = collect_demos(cfg, workers=1, progress=False)
    assert summary.episodes == 2 and summary.attempts >= 2 and summary.bytes > 0
    robot = TabletopRobot(image_size=32, families=("block2location",))
    for index, path in enumerate(list_episodes(tmp_path)):
        ep = read_episode(path)
        cd = ep.custom_data
        assert set(CUSTOM_DATA_KEYS) <= set(cd)
        assert (cd["source"], cd["policy_version"], cd["outcome"], cd["family"]) == (
            "demonstrator", "demonstrator", "success", "block2location")
        assert cd["seed"] == str(episode_seed(3, index, int(cd["attempt"])))
        assert ep.robot == "demo_0" and ep.image_size == (32, 32) and ep.outcome == "success"
        assert ep.policy_versions == ["demonstrator"] * ep.num_steps
        assert not ep.log_probs.any() and not ep.entropies.any()
        assert np.array_equal(ep.tokens, ActionBins().encode(ep.actions))
        assert [(e.event, e.outcome, e.steps) for e in ep.events] == [("start", "unknown", 0),
                                                                      ("success", "success", ep.num_steps)]
        start = DEMO_CLOCK_BASE_NS + index * DEMO_CLOCK_EPISODE_STRIDE_NS
        assert np.array_equal(ep.frame_stamps_ns, start + 100_000_000 * np.arange(ep.num_steps + 1))
        # the bag is the episode: replaying its actions from its seed gives its frames and succeeds
        assert robot.reset(seed=int(cd["seed"])) == ep.instruction
        assert np.array_equal(robot.observe(), ep.frames[0])
        for t, action in enumerate(ep.actions):
            robot.step(action)
            assert np.array_equal(robot.observe(), ep.frames[t + 1])
        assert robot.success()


def test_cli_summary_refusal_and_bad_output(tmp_path, capsys):
    out = tmp_path / "demos"
    args = ["--episodes", "2", "--out", str(out), "--seed", "4", "--image-size", "32", "--workers", "1",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for text in ("episodes written:   2", "demonstrator:", "% successful", "mean", "MB", "episodes/min"):
        assert text in printed
    before = {p.name: _files(p) for p in list_episodes(out)}
    assert main(args) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert {p.name: _files(p) for p in list_episodes(out)} == before
    (tmp_path / "file").write_text("x")
    assert main(["--episodes", "1", "--out", str(tmp_path / "file"), "--seed", "0", "--no-progress"]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["--episodes", "1", "--out", str(out), "--seed", "0", "--families", "nope", "--no-progress"]) == 2
