"""Camera-side image processing shared by the nodes (pure numpy/OpenCV, no ROS import)."""
