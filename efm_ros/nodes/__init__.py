"""ROS 2 nodes: thin shells over the plain-Python modules of efm_ros."""
