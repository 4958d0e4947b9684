"""Camera preprocessing: decode, centre crop, INTER_AREA resize; sim frames pass through bit-identical."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from efm_ros.vision.preprocess import FrameError, bgr_to_rgb, center_crop_square, decode, prepare, to_model_frame


def _raw(rgb: np.ndarray, encoding: str = "rgb8", pad: int = 0):
    """(encoding, height, width, step, data) of an image as a camera driver would send it."""
    img = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    h, w = img.shape[:2]
    rows = np.zeros((h, w * 3 + pad), np.uint8)
    rows[:, : w * 3] = img.reshape(h, w * 3)
    return encoding, h, w, w * 3 + pad, rows.tobytes()


def test_sim_frames_reach_the_model_bit_identical():
    from efm_ros.sim.tabletop import TabletopRobot

    robot = TabletopRobot(image_size=96)
    robot.reset(seed=3)
    frame = robot.observe()                       # exactly what demonstrations record
    out = prepare(*_raw(frame), image_size=96)
    assert out.dtype == np.uint8 and out.shape == (96, 96, 3)
    assert out.tobytes() == frame.tobytes()
    view = to_model_frame(frame, 96)              # no copy, no resampling
    assert np.shares_memory(view, frame)


def test_decode_rgb8_is_a_view_bgr8_and_padded_rows_are_converted():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    enc, h, w, step, data = _raw(rgb)
    buf = bytearray(data)
    assert np.shares_memory(decode(enc, h, w, step, buf), np.frombuffer(buf, np.uint8))
    np.testing.assert_array_equal(decode(*_raw(rgb, "bgr8")), rgb)
    padded = decode(*_raw(rgb, "rgb8", pad=3))
    np.testing.assert_array_equal(padded, rgb)
    assert padded.flags.c_contiguous
    np.testing.assert_array_equal(decode(*_raw(rgb, "bgr8", pad=5)), rgb)


@pytest.mark.parametrize("fields, reason", [
    (("mono8", 4, 4, 4, bytes(16)), "encoding"),
    (("rgb16", 4, 4, 24, bytes(96)), "encoding"),
    (("rgb8", 0, 0, 0, b""), "empty"),
    (("rgb8", 4, 0, 0, b""), "empty"),
    (("rgb8", 4, 4, 6, bytes(24)), "step"),
    (("rgb8", 4, 4, 12, bytes(47)), "size"),
    (("bgr8", 4, 4, 12, bytes(100)), "size"),
])
def test_malformed_frames_are_rejected_with_a_reason(fields, reason):
    with pytest.raises(FrameError) as info:
        decode(*fields)
    assert info.value.reason == reason and str(info.value)


def test_centre_crop_then_inter_area_resize():
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = center_crop_square(wide)
    assert crop.shape == (120, 120, 3)
    np.testing.assert_array_equal(crop, wide[:, 20:140])
    tall = rng.integers(0, 256, (161, 100, 3), dtype=np.uint8)
    np.testing.assert_array_equal(center_crop_square(tall), tall[30:130])   # (161 - 100) // 2 = 30 on top

    out = to_model_frame(wide, 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    expected = cv2.resize(np.ascontiguousarray(wide[:, 20:140]), (96, 96), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    # INTER_AREA at an integer factor is the block mean: a 2x2 checker of flat blocks stays flat
    blocks = np.kron(np.array([[0, 200], [200, 0]], np.uint8), np.ones((96, 96), np.uint8))
    small = to_model_frame(np.repeat(blocks[:, :, None], 3, axis=2), 96)
    assert set(np.unique(small)) == {0, 200}
    # upscaling works too (a small camera); bgr8 input goes through the same path
    np.testing.assert_array_equal(prepare(*_raw(wide, "bgr8"), image_size=96), out)
    assert to_model_frame(wide[:40, :50], 96).shape == (96, 96, 3)


def test_capture_frames_are_bgr_and_checked():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255                                   # pure blue in OpenCV's BGR
    assert bgr_to_rgb(bgr)[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(FrameError, match="expected"):
        bgr_to_rgb(np.zeros((2, 3), np.uint8))
    with pytest.raises(FrameError):
        bgr_to_rgb(np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(FrameError):
        to_model_frame(np.zeros((4, 4, 3), np.float32), 96)
