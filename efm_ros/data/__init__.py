"""Episode data: one rosbag2 (MCAP) directory per episode, written and read without rclpy.

- :mod:`efm_ros.data.episode`: the in-memory :class:`Episode` (frames, actions, stamps, facts).
- :mod:`efm_ros.data.bag`: :class:`EpisodeBagWriter` (incremental, atomic; used by the live
  logger node) and :func:`write_episode`.
- :mod:`efm_ros.data.reader`: :func:`read_episode`, :func:`list_episodes`, :func:`iter_episodes`.
- :mod:`efm_ros.data.interfaces`: topic names and the rosbags typestore with our message types.
- :mod:`efm_ros.data.recover`: :func:`recover_bag` for a bag cut by a crash.
- ``efm-ros collect-demos`` (:mod:`efm_ros.data.collect`), ``efm-ros read-bag`` (:mod:`efm_ros.data.inspect`).
"""
from efm_ros.data.bag import (
    DEFAULT_CHUNK_BYTES,
    STAGING_DIRNAME,
    EpisodeBagWriter,
    EpisodeWriteError,
    episode_being_written,
    write_episode,
)
from efm_ros.data.episode import Episode, EventRecord, StepsToGoTrack
from efm_ros.data.reader import (
    EpisodeBagError,
    bag_summary,
    iter_episodes,
    list_episodes,
    read_episode,
    read_metadata,
)
from efm_ros.data.recover import recover_bag

__all__ = [
    "DEFAULT_CHUNK_BYTES", "STAGING_DIRNAME", "Episode", "EpisodeBagError", "EpisodeBagWriter", "EpisodeWriteError",
    "EventRecord", "StepsToGoTrack", "bag_summary", "episode_being_written", "iter_episodes", "list_episodes",
    "read_episode", "read_metadata", "recover_bag", "write_episode",
]
