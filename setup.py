"""Python side of efm_ros (pip world: ``pip install -e .``; the interfaces are built by CMake).

Under colcon the package is built by CMakeLists.txt (ament_cmake + ament_cmake_python); this
file is what pip uses and what keeps the ``efm-ros`` entry point and the node executables.
"""
from setuptools import find_packages, setup

setup(
    name="efm-ros",
    version="0.1.0",
    description="Self-Improving Embodied Foundation Models as a ROS 2 stack",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["efm_ros", "efm_ros.*"]),
    package_data={"efm_ros": ["py.typed"]},
    entry_points={
        "console_scripts": [
            "efm-ros = efm_ros.cli:main",
        ],
    },
)
