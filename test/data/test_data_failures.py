"""Episode bags under failure: overwrite, unusable paths, a REAL full disk (tmpfs), truncation,
a writer killed mid-episode. Nothing half-written may ever be listed as an episode."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from efm_ros.data import (
    EpisodeBagError,
    EpisodeBagWriter,
    EpisodeWriteError,
    episode_being_written,
    iter_episodes,
    list_episodes,
    read_episode,
    write_episode,
)
from efm_ros.data.recover import recover_bag


def test_refuses_to_overwrite_an_existing_episode(tmp_path, demo_episode, make_demo):
    path = write_episode(tmp_path, demo_episode)
    before = {f.name: f.read_bytes() for f in path.iterdir()}
    other = make_demo(seed=5, episode_id=demo_episode.episode_id)
    with pytest.raises(FileExistsError, match="already exists.*refusing to overwrite"):
        write_episode(tmp_path, other)
    assert {f.name: f.read_bytes() for f in path.iterdir()} == before
    assert not (tmp_path / ".staging" / demo_episode.episode_id).exists()


def test_bad_output_paths_give_clear_errors(tmp_path, demo_episode, tmpfs):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        write_episode(a_file, demo_episode)
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        write_episode(a_file / "sub" / "dir", demo_episode)
    # a missing parent is created
    assert write_episode(tmp_path / "new" / "episodes", demo_episode).is_dir()
    # read-only filesystem (root ignores permission bits, so use a read-only mount)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        with pytest.raises(EpisodeWriteError, match="Read-only file system") as info:
            write_episode(ro / "episodes", demo_episode)
        assert info.value.errno == errno.EROFS


def test_full_disk_is_a_clear_error_and_leaves_no_partial_episode(tmp_path, make_demo, tmpfs):
    """A real ENOSPC: a 512 KiB tmpfs. The first small episode fits; a big one does not."""
    with tmpfs(tmp_path / "small", "size=512k") as disk:
        small = make_demo(steps=3, size=(8, 8), episode_id="e_small")
        first = write_episode(disk, small)
        big = make_demo(steps=40, size=(64, 64), seed=2, episode_id="e_big")  # ~0.5 MB of noise frames
        with pytest.raises(EpisodeWriteError, match="no space left on device") as info:
            write_episode(disk, big, chunk_bytes=32 * 1024)
        assert info.value.errno == errno.ENOSPC
        assert "e_big" in str(info.value) and "incomplete bag was removed" in str(info.value)
        assert list_episodes(disk) == [first]
        assert not (disk / ".staging" / "e_big").exists() and not (disk / "e_big").exists()
        assert small.diff(read_episode(first), ignore=("topic_counts",)) == []


def test_truncated_or_incomplete_bags_name_the_file(tmp_path, demo_episode):
    path = write_episode(tmp_path, demo_episode)
    mcap = path / f"{path.name}.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeBagError, match=f"{mcap.name}.*(corrupt|truncated)"):
        read_episode(path)
    mcap.write_bytes(data[:-1])  # only the closing magic is missing
    with pytest.raises(EpisodeBagError, match=mcap.name):
        read_episode(path)
    mcap.unlink()
    with pytest.raises(EpisodeBagError, match="missing"):
        read_episode(path)
    (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [not: a mapping")
    with pytest.raises(EpisodeBagError, match="metadata.yaml"):
        read_episode(path)
    (path / "metadata.yaml").unlink()
    with pytest.raises(EpisodeBagError, match="metadata.yaml: missing"):
        read_episode(path)
    assert list_episodes(tmp_path) == []  # without metadata.yaml it is not an episode


def test_iter_episodes_skips_corrupt_bags_only_when_asked(tmp_path, make_demo):
    good = write_episode(tmp_path, make_demo(episode_id="a"))
    bad = write_episode(tmp_path, make_demo(episode_id="b"))
    (bad / "b.mcap").write_bytes(b"\x89MCAP0\r\n")
    with pytest.raises(EpisodeBagError, match="b.mcap"):
        list(iter_episodes(tmp_path))
    with pytest.warns(RuntimeWarning, match="b.mcap"):
        eps = list(iter_episodes(tmp_path, skip_corrupt=True, progress=True))
    assert [e.episode_id for e in eps] == ["a"] and good.name == "a"


def test_writer_killed_mid_episode_leaves_an_unlisted_staging_bag_that_recovers(tmp_path, python_env):
    """SIGKILL while writing: no episode appears; complete chunks are on disk (small chunks, flushed)
    and ``recover_bag`` turns them into a complete, readable episode."""
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from efm_ros.data import EpisodeBagWriter, EventRecord
        w = EpisodeBagWriter({str(tmp_path)!r}, "killed", robot="robot_2", chunk_bytes=16 * 1024)
        w.open()
        w.add_event(EventRecord(10**9, "start", instruction="push the red block to the center"))
        rng = np.random.default_rng(0)
        for t in range(20):
            w.add_image(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), 10**9 + t)
            w.add_action(10**9 + t, t, [0.5, -0.5], [15, 5], log_prob=-1.5, model_version="v1")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=python_env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert list_episodes(tmp_path) == []
    staging = tmp_path / ".staging" / "killed"
    assert (staging / "killed.mcap").is_file() and not (staging / "metadata.yaml").exists()
    with pytest.raises(EpisodeBagError, match="metadata.yaml: missing"):
        read_episode(staging)

    # a rerun with the same id refuses unless told to replace the stale staging bag
    with pytest.raises(FileExistsError, match="incomplete bag"):
        EpisodeBagWriter(tmp_path, "killed", robot="r").open()

    path = recover_bag(staging)
    assert path == tmp_path / "killed" and list_episodes(tmp_path) == [path]
    assert not staging.exists() and not (tmp_path / ".staging" / "killed.crashed").exists()
    ep = read_episode(path)
    # at most one 16 KiB chunk (two ticks of 6.9 KB frames) was lost
    assert 17 <= ep.num_steps <= 19 and ep.robot == "robot_2" and ep.episode_id == "killed"
    assert ep.custom_data["recovered"] == "true" and ep.outcome == "unknown"
    assert ep.instruction == "push the red block to the center"
    assert np.array_equal(ep.tokens, np.tile([15, 5], (ep.num_steps, 1))) and ep.policy_versions[0] == "v1"
    expected = np.random.default_rng(0).integers(0, 256, (ep.num_steps + 1, 48, 48, 3), dtype=np.uint8)
    assert np.array_equal(ep.frames, expected)


def test_one_writer_per_episode_id_and_live_bags_are_never_treated_as_stale(tmp_path, demo_episode):
    first = EpisodeBagWriter(tmp_path, "e", robot="r")
    first.open()
    first.add_image(demo_episode.frames[0], 1)
    for replace in (False, True):
        with pytest.raises(FileExistsError, match="being written by another writer"):
            EpisodeBagWriter(tmp_path, "e", robot="r", replace_stale_staging=replace).open()
    assert episode_being_written(tmp_path, "e")
    with pytest.raises(EpisodeBagError, match="live writer"):
        recover_bag(tmp_path / ".staging" / "e")
    path = first.close()  # untouched by the refused writers
    assert read_episode(path).num_steps == 0 and not episode_being_written(tmp_path, "e")
    assert sorted(os.listdir(tmp_path / ".staging")) == []  # lock file gone too


def test_exception_while_writing_removes_the_staging_bag(tmp_path, demo_episode):
    demo_episode.extras["/demo_0/bad"] = [(1, object())]  # not a message: fails after the frames are written
    with pytest.raises(AttributeError):
        write_episode(tmp_path, demo_episode)
    assert list_episodes(tmp_path) == [] and os.listdir(tmp_path / ".staging") == []


def test_recover_crashed_takes_only_its_robots_dead_bags(tmp_path, python_env):
    """What a respawned logger does at start: every crashed bag of its robot is recovered; another
    robot's crashed bag and a bag a live writer holds are left alone."""
    from efm_ros.data import EpisodeBagWriter
    from efm_ros.data.recover import recover_crashed

    def killed_writer(episode_id: str, robot: str) -> None:
        script = textwrap.dedent(f"""
            import os, signal, numpy as np
            from efm_ros.data import EpisodeBagWriter, EventRecord
            w = EpisodeBagWriter({str(tmp_path)!r}, {episode_id!r}, robot={robot!r}, chunk_bytes=8 * 1024)
            w.open()
            w.add_event(EventRecord(10**9, "start", instruction="push the red block to the center"))
            for t in range(10):
                w.add_image(np.full((48, 48, 3), t, np.uint8), 10**9 + t)
                w.add_action(10**9 + t, t, [0.5, -0.5], [15, 5], log_prob=-1.5, model_version="v1")
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        proc = subprocess.run([sys.executable, "-c", script], env=python_env, capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()

    killed_writer("robot_2_a", "robot_2")
    killed_writer("robot_3_b", "robot_3")
    live = EpisodeBagWriter(tmp_path, "robot_2_live", robot="robot_2")
    live.open()
    try:
        results = dict(recover_crashed(tmp_path, robot="robot_2"))
        assert list(results) == ["robot_2_a"] and results["robot_2_a"].startswith("recovered")
        assert list_episodes(tmp_path) == [tmp_path / "robot_2_a"]
        assert read_episode(tmp_path / "robot_2_a", unmatched_actions="drop").custom_data["recovered"] == "true"
        assert (tmp_path / ".staging" / "robot_3_b").is_dir() and (tmp_path / ".staging" / "robot_2_live").is_dir()
        assert recover_crashed(tmp_path, robot="robot_2") == []            # nothing left of robot_2's
    finally:
        live.abort()
    assert dict(recover_crashed(tmp_path))["robot_3_b"].startswith("recovered")  # any robot's, when not told
