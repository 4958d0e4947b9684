"""numpy <-> sensor_msgs/Image without cv_bridge (not on PyPI), with validation of what arrives."""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image

_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


class ImageFormatError(ValueError):
    """A received image that cannot be used (encoding, size, truncated data)."""


def numpy_to_image(rgb: np.ndarray, stamp=None, frame_id: str = "camera", encoding: str = "rgb8") -> Image:
    """An (H, W, 3) uint8 array -> Image (one memcpy; see notes/ros-from-pip.md §3.4)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != _CHANNELS.get(encoding, -1):
        raise ImageFormatError(f"expected (H, W, {_CHANNELS.get(encoding)}) uint8 for {encoding}, got {rgb.shape} {rgb.dtype}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1] * rgb.shape[2])
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(rgb).data)
    msg.data = data
    return msg


def image_to_rgb(msg: Image, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Image -> (H, W, 3) uint8 RGB. Raises ImageFormatError with the reason if unusable.

    rgb8 is returned as a zero-copy view; bgr8 is converted. ``expect_size`` is (height, width).
    """
    enc = msg.encoding
    if enc not in ("rgb8", "bgr8"):
        raise ImageFormatError(f"unsupported encoding {enc!r} (need rgb8 or bgr8)")
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ImageFormatError("empty image (0 pixels)")
    if expect_size is not None and (h, w) != tuple(expect_size):
        raise ImageFormatError(f"image is {h}x{w}, expected {expect_size[0]}x{expect_size[1]}")
    if msg.step < w * 3:
        raise ImageFormatError(f"step {msg.step} < width*3 = {w * 3}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != h * msg.step:
        raise ImageFormatError(f"data has {buf.size} bytes, expected height*step = {h * msg.step}")
    img = buf.reshape(h, msg.step)[:, : w * 3].reshape(h, w, 3)
    return img[:, :, ::-1].copy() if enc == "bgr8" else img
