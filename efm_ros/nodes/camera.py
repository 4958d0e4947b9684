"""The camera/perception node: raw frames in, model-ready frames out (one per robot namespace).

Publishes
  camera/image      sensor_msgs/Image rgb8, image_size x image_size (sensor-data QoS): the frame
                    policy, steps_to_go and logger use. Stamp: the SOURCE stamp for topic input (so
                    actions align with recorded images), the capture time for device/file input.
  /diagnostics      rate, latency p50/p99 (now - stamp at publish), processing time, rejected
                    frames by reason (1 Hz)
Subscribes (source:=topic)
  camera/image_raw  sensor_msgs/Image rgb8 or bgr8, any size (sensor-data QoS), e.g. the sim robot
Sources
  topic   camera/image_raw (default)
  device  OpenCV VideoCapture: ``device`` is an index ("0") or a path ("/dev/video2")
  file    a video file ``file_path``, played at ``capture_rate_hz`` (0 = the file's fps), ``loop``ed

Conversion (efm_ros.vision.preprocess, identical to training): decode -> centre-crop to a square
-> INTER_AREA resize to image_size; a frame already image_size square passes through untouched,
so the simulator's frames reach the model bit-identical to the training frames. Malformed frames
(other encodings, empty, step/data size mismatch) are dropped, counted by reason, logged
(throttled) and reported on /diagnostics. A device or file that cannot be opened raises
CameraSourceError from the constructor; ``main`` prints it and exits with status 1.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import Image

from efm_ros.diagnostics import RollingStats
from efm_ros.nodes.common import declare, diagnostic_array, spin_node
from efm_ros.data.interfaces import valid_stamp
from efm_ros.nodes.images import numpy_to_image
from efm_ros.vision.preprocess import FrameError, bgr_to_rgb, prepare, to_model_frame
from efm_ros.vision.preprocess import IMAGE_SIZE

SOURCES = ("topic", "device", "file")


class CameraSourceError(RuntimeError):
    """The configured camera source cannot be used (bad source name, device/file not openable)."""


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera", **kwargs)
        self.source = declare(self, "source", "topic", f"where frames come from: one of {SOURCES}", read_only=True)
        self.device = declare(self, "device", "0", "source:=device: VideoCapture index or /dev/videoN path", read_only=True)
        self.file_path = declare(self, "file_path", "", "source:=file: video file", read_only=True)
        self.loop = declare(self, "loop", True, "source:=file: start again at the end", read_only=True)
        self.capture_rate = declare(self, "capture_rate_hz", 10.0, "device/file: frames per second published "
                                    "(file: 0 = its own fps)", lo=0.0, hi=240.0, read_only=True)
        self.image_size = declare(self, "image_size", IMAGE_SIZE, "output height = width, pixels (the model's image_size)",
                                  lo=16, hi=1024, read_only=True)
        self.frame_id = declare(self, "frame_id", "camera", "frame_id of device/file frames (topic input keeps its own)")
        self._capture, period = None, 0.0
        try:
            if self.source not in SOURCES:
                raise CameraSourceError(f"camera: source {self.source!r} is not one of {SOURCES}")
            if self.source != "topic":
                self._capture, period = self._open()
        except CameraSourceError:
            self.destroy_node()              # the caller gets the error, not a half-built node
            raise

        self.stats = RollingStats()          # latency = now - output stamp, at publish
        self.process = RollingStats()        # latency = decode + crop + resize time
        self._stop = threading.Event()
        self._thread = None
        self.image_pub = self.create_publisher(Image, "camera/image", qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.source == "topic":
            self.create_subscription(Image, "camera/image_raw", self._on_raw, qos_profile_sensor_data)
        else:
            # A thread, not a timer: VideoCapture.read() blocks until the next frame.
            self._thread = threading.Thread(target=self._capture_loop, args=(period,), name="camera-capture", daemon=True)
            self._thread.start()
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"source {self.source}, output {self.image_size}x{self.image_size} rgb8 on camera/image")

    # -- topic source -------------------------------------------------------------------------
    def _on_raw(self, msg: Image) -> None:
        t0 = time.perf_counter()
        if not valid_stamp(msg.header.stamp):  # never forwarded: downstream nodes would get it too
            self._reject(FrameError("bad_stamp", f"stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} "
                                                 f"is not a valid time"))
            return
        try:
            rgb = prepare(msg.encoding, msg.height, msg.width, msg.step, msg.data, self.image_size)
        except FrameError as exc:
            self._reject(exc)
            return
        self.process.tick(time.perf_counter() - t0)
        self._publish(rgb, msg.header.stamp, msg.header.frame_id or self.frame_id)

    # -- device / file source -----------------------------------------------------------------
    def _open(self):
        import cv2

        if self.source == "device":
            target = int(self.device) if self.device.strip().isdigit() else self.device
            what = f"device {self.device!r}"
        else:
            if not self.file_path or not Path(self.file_path).is_file():
                raise CameraSourceError(f"camera: file_path {self.file_path!r} is not a file")
            target, what = self.file_path, f"file {self.file_path!r}"
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise CameraSourceError(f"camera: cannot open {what} with OpenCV (missing, busy, or no permission?)")
        ok, _ = cap.read()
        if not ok:
            cap.release()
            raise CameraSourceError(f"camera: {what} opened but delivers no frames")
        if self.source == "file":
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        rate = self.capture_rate
        if rate == 0.0:
            fps = cap.get(cv2.CAP_PROP_FPS)
            rate = fps if self.source == "file" and fps and fps > 0 else 10.0
        return cap, 1.0 / rate

    def _capture_loop(self, period: float) -> None:
        import cv2

        next_t = time.monotonic()
        rewound = False
        while not self._stop.is_set():
            ok, frame = self._capture.read()
            stamp = self.get_clock().now()            # capture time: fresh stamp for device/file frames
            if not ok:
                if self.source == "file" and self.loop and not rewound:
                    self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    rewound = True
                    continue
                if self.source == "file":
                    self.get_logger().info("end of file: no more frames" + ("" if self.loop else " (loop:=false)"))
                    return
                self.stats.counts["read_failures"] += 1
                self.get_logger().warning("camera read failed", throttle_duration_sec=2.0)
                self._stop.wait(0.1)
                continue
            rewound = False
            t0 = time.perf_counter()
            try:
                rgb = to_model_frame(bgr_to_rgb(frame), self.image_size)
            except FrameError as exc:
                self._reject(exc)
                continue
            self.process.tick(time.perf_counter() - t0)
            self._publish(rgb, stamp.to_msg(), self.frame_id)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif self.source == "device":
                next_t = time.monotonic()             # devices pace themselves: do not accumulate lag
            else:
                next_t = max(next_t, time.monotonic() - period)

    # -- output -------------------------------------------------------------------------------
    def _reject(self, exc: FrameError) -> None:
        self.stats.counts[f"rejected_{exc.reason}"] += 1
        rejected = sum(v for k, v in self.stats.counts.items() if k.startswith("rejected_"))
        self.get_logger().warning(f"rejected frame ({exc.reason}): {exc}; {rejected} rejected so far",
                                  throttle_duration_sec=1.0)

    def _publish(self, rgb, stamp, frame_id: str) -> None:
        self.image_pub.publish(numpy_to_image(rgb, stamp, frame_id))
        age = self.get_clock().now() - Time.from_msg(stamp)
        self.stats.tick(age.nanoseconds * 1e-9)

    def _publish_diagnostics(self) -> None:
        values = self.stats.summary()
        process = self.process.summary()
        if "latency_p50_ms" in process:
            values["process_p50_ms"], values["process_p99_ms"] = process["latency_p50_ms"], process["latency_p99_ms"]
        values.update({"source": self.source, "image_size": str(self.image_size)})
        rejected = sum(v for k, v in self.stats.counts.items() if k.startswith("rejected_"))
        level = DiagnosticStatus.WARN if rejected or self.stats.counts["read_failures"] else DiagnosticStatus.OK
        message = f"{rejected} frames rejected" if rejected else "running"
        self.diag_pub.publish(diagnostic_array(self, "camera", level, message, values))

    def close(self) -> None:
        """Stop the capture thread and release the device/file (spin_node calls this on exit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def main(argv: list[str] | None = None) -> int:
    import sys

    try:
        return spin_node(CameraNode, argv)
    except CameraSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
