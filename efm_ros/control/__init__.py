"""Robot-side control logic without ROS: episodes, model hot-swap, episode recording."""
