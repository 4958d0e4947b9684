"""efm_ros: Self-Improving Embodied Foundation Models as a ROS 2 stack.

The rosidl-generated interfaces live in ``efm_ros.msg``. Under colcon they are installed next to
this package; in the pip world they are installed into the venv's site-packages while this
package is used from the source tree (editable), so the package path is extended to both.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
