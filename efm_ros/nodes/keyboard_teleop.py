"""``efm-ros teleop-keyboard``: drive a robot from a terminal and record demonstrations.

    efm-ros up --record                                     # the graph in record mode (another terminal)
    efm-ros teleop-keyboard --namespace /robot_0            # this terminal: keys below

Keys (the arm moves while a motion key is held or repeated, and stops ``--hold`` seconds after
the last one; a space stops it at once)::

    w / s   -y / +y  (up / down in the table camera)      n      start an episode (resets the robot)
    a / d   -x / +x  (left / right)                        y      mark it a success (it ends now)
    r / f   +z / -z                                        x      discard it (kept apart, never trained on)
    g       close / open the gripper                       q      quit
    space   stop

It publishes ``geometry_msgs/TwistStamped`` on ``<ns>/teleop/cmd_vel`` at ``--rate`` Hz,
``std_msgs/Float64`` on ``<ns>/teleop/gripper`` and the operator's commands on
``<ns>/record/command``; the teleop node applies the same limits and watchdog as the policy.
The state of the recording (``<ns>/record/state``) is shown on one line. Any other teleop source
works the same way, e.g. ``ros2 run teleop_twist_keyboard teleop_twist_keyboard --ros-args -p
stamped:=true -r cmd_vel:=/robot_0/teleop/cmd_vel``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

MOTION_KEYS = {"w": (1, -1.0), "s": (1, 1.0), "a": (0, -1.0), "d": (0, 1.0), "r": (2, 1.0), "f": (2, -1.0)}
"""key -> (linear axis index, direction)"""
OPERATOR_KEYS = {"n": "start", "y": "success", "x": "discard"}


@dataclass
class KeyboardTeleop:
    """Keys -> velocity, gripper and operator commands (no ROS, no terminal: for the tests)."""

    speed_mps: float = 0.2
    hold_s: float = 0.6
    gripper_closed: bool = False
    quit: bool = False
    _velocity: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _until: float = 0.0

    def key(self, key: str, now: float) -> tuple[str | None, bool]:
        """Apply one key. Returns (operator command or None, whether the gripper changed)."""
        if key in MOTION_KEYS:
            axis, sign = MOTION_KEYS[key]
            if now > self._until:
                self._velocity = [0.0, 0.0, 0.0]
            self._velocity[axis] = sign * self.speed_mps
            self._until = now + self.hold_s
        elif key == " ":
            self._velocity, self._until = [0.0, 0.0, 0.0], 0.0
        elif key == "g":
            self.gripper_closed = not self.gripper_closed
            return None, True
        elif key == "q" or key == "\x03":
            self.quit = True
        elif key in OPERATOR_KEYS:
            self._velocity, self._until = [0.0, 0.0, 0.0], 0.0
            return OPERATOR_KEYS[key], False
        return None, False

    def velocity(self, now: float) -> tuple[float, float, float]:
        """The linear velocity to send now, m/s (zero once the hold has run out)."""
        return tuple(self._velocity) if now <= self._until else (0.0, 0.0, 0.0)

    @property
    def gripper(self) -> float:
        return 1.0 if self.gripper_closed else -1.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros teleop-keyboard", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--namespace", default="/robot_0", help="robot namespace (default /robot_0)")
    p.add_argument("--speed", type=float, default=0.2, help="speed of a motion key, m/s (default 0.2: full scale)")
    p.add_argument("--rate", type=float, default=20.0, help="twist messages per second (default 20)")
    p.add_argument("--hold", type=float, default=0.6, help="seconds a key press keeps moving (default 0.6)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stdin.isatty():
        print("teleop-keyboard: needs a terminal (stdin is not a TTY)", file=sys.stderr)
        return 2
    import select
    import termios
    import tty

    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from std_msgs.msg import Float64, String

    from efm_ros.nodes.common import twist_stamped

    ns = "/" + args.namespace.strip("/")
    rclpy.init()
    node = rclpy.create_node("teleop_keyboard", namespace=ns)
    twist_pub = node.create_publisher(TwistStamped, "teleop/cmd_vel", 10)
    gripper_pub = node.create_publisher(Float64, "teleop/gripper", 10)
    command_pub = node.create_publisher(String, "record/command", 10)
    state = {"text": "waiting for the teleop node (efm-ros up --record)"}
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, "record/state", lambda m: state.update(text=m.data), latched)
    teleop = KeyboardTeleop(speed_mps=args.speed, hold_s=args.hold)
    print(__doc__.split("Keys")[1].split("It publishes")[0].rstrip(), flush=True)
    old = termios.tcgetattr(sys.stdin)
    period = 1.0 / args.rate
    try:
        tty.setcbreak(sys.stdin.fileno())
        while not teleop.quit and rclpy.ok():
            ready, _, _ = select.select([sys.stdin], [], [], period)
            now = time.monotonic()
            if ready:
                command, gripper_changed = teleop.key(sys.stdin.read(1).lower(), now)
                if command:
                    command_pub.publish(String(data=command))
                if gripper_changed:
                    gripper_pub.publish(Float64(data=teleop.gripper))
            twist_pub.publish(twist_stamped(node, "table", teleop.velocity(now)))
            rclpy.spin_once(node, timeout_sec=0)
            sys.stdout.write(f"\r\x1b[K{state['text']}  gripper {'closed' if teleop.gripper_closed else 'open'}")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
        twist_pub.publish(twist_stamped(node, "table"))
        print()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
