"""The robot graph: ONE description of nodes, namespaces, parameters and remappings, used by
``launch/self_improve.launch.py`` (ros2 launch) and by ``efm-ros up`` (installs without launch)."""
