"""Raw camera frame -> model input, exactly as in training (pure numpy/OpenCV, no ROS import).

The model's frames are RGB uint8, ``image_size`` x ``image_size`` (the exported manifest records
the size; the graph does everything else). Training frames are the embedded robot's own renders
at that size, so the camera path must leave those untouched:

    decode (rgb8 / bgr8 raw buffer, any row padding)  -> (H, W, 3) RGB uint8
    centre-crop to a square (the longer side loses (long - short) // 2 pixels first)
    resize to image_size with cv2.INTER_AREA           (skipped when already that size)

A frame that is already ``image_size`` square is returned as it came (no copy, no resampling),
so simulator frames reach the model bit-identical to the recorded training frames.
:func:`decode` rejects unusable buffers with a :class:`FrameError` whose ``reason`` is a short
key (``encoding``, ``empty``, ``step``, ``size``, ``channels``) the nodes count on /diagnostics.
"""
from __future__ import annotations

import cv2
import numpy as np

ENCODINGS = ("rgb8", "bgr8")

#: default model input height = width, pixels (the embedded camera, the sim nodes and the model
#: config default to it; a model's own value is its manifest's preprocessing.image_size)
IMAGE_SIZE = 96
"""accepted sensor_msgs/Image encodings; everything else is rejected"""


class FrameError(ValueError):
    """An unusable frame. ``reason`` is a short counter key, the message says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def decode(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """A raw image buffer (the fields of a sensor_msgs/Image) -> (H, W, 3) RGB uint8.

    rgb8 without row padding comes back as a zero-copy view of ``data``; bgr8 and padded rows
    are copied. Raises FrameError for an unsupported encoding, an empty image, a step shorter
    than a row, or a buffer whose length is not height * step.
    """
    if encoding not in ENCODINGS:
        raise FrameError("encoding", f"unsupported encoding {encoding!r} (need one of {ENCODINGS})")
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise FrameError("empty", f"empty image ({h}x{w})")
    if step < w * 3:
        raise FrameError("step", f"step {step} < width * 3 = {w * 3}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != h * step:
        raise FrameError("size", f"data has {buf.size} bytes, expected height * step = {h} * {step} = {h * step}")
    img = buf.reshape(h, step)[:, : w * 3].reshape(h, w, 3)
    if encoding == "bgr8":
        return np.ascontiguousarray(img[:, :, ::-1])
    return img if step == w * 3 else np.ascontiguousarray(img)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV capture frame (H, W, 3) BGR uint8 -> RGB. Raises FrameError if it is not one."""
    if frame is None or frame.size == 0:
        raise FrameError("empty", "empty capture frame")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameError("channels", f"capture frame is {frame.dtype} {frame.shape}, expected (H, W, 3) uint8")
    return np.ascontiguousarray(frame[:, :, ::-1])


def center_crop_square(rgb: np.ndarray) -> np.ndarray:
    """The centred square of side min(H, W) (a view; the image itself if already square)."""
    h, w = rgb.shape[:2]
    if h == w:
        return rgb
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return rgb[top: top + side, left: left + side]


def to_model_frame(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (image_size, image_size, 3) RGB uint8, C-contiguous.

    Centre-crop to a square, then cv2.INTER_AREA resize (the filter the simulator itself uses to
    shrink its renders). An input already image_size x image_size is returned unchanged.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FrameError("channels", f"expected (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise FrameError("empty", f"empty image {rgb.shape}")
    square = center_crop_square(rgb)
    if square.shape[0] == image_size:
        return np.ascontiguousarray(square)   # no-op for a contiguous input: bit-identical pass-through
    return cv2.resize(np.ascontiguousarray(square), (image_size, image_size), interpolation=cv2.INTER_AREA)


def prepare(encoding: str, height: int, width: int, step: int, data, image_size: int) -> np.ndarray:
    """decode() then to_model_frame(): the camera node's whole conversion of one raw frame."""
    return to_model_frame(decode(encoding, height, width, step, data), image_size)
