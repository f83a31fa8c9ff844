"""psc6k.images.read_image: the one image reader, its size policy and hostile files."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from psc6k.data import sample_path
from psc6k.errors import FormatError
from psc6k.formats import read_annotations
from psc6k.images import MAX_IMAGE_PIXELS, read_image


@pytest.fixture(scope="module")
def sample():
    root = sample_path()
    return root, read_annotations(root / "test_pairs_ps.csv")


def test_modes_shapes_and_values_match_an_independent_decoder(sample):
    root, ann = sample
    for rel in (ann.photo[0], ann.sketch[0]):  # a JPEG photo and a PNG sketch
        rgb = read_image(root, rel)
        assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb, cv2.imread(str(root / rel), cv2.IMREAD_COLOR)[:, :, ::-1])
        gray = read_image(root, rel, "gray")
        assert gray.shape == (256, 256) and gray.dtype == np.uint8
        # ITU-R 601-2 luma in integers, as documented
        r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
        assert np.abs(gray - (r * 299 + g * 587 + b * 114) / 1000).max() <= 1


def test_transparency_is_composited_over_white_and_16_bit_is_scaled(tmp_path):
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[..., :3] = 10
    rgba[:128, :, 3] = 255  # top half opaque dark, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path, "a.png")
    assert (out[:128] == 10).all() and (out[128:] == 255).all()
    assert (read_image(tmp_path, "a.png", "gray")[128:] == 255).all()
    deep = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256) % 65536).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    g = read_image(tmp_path, "d.png", "gray")
    assert g.dtype == np.uint8 and g.max() == 255 and g.min() == 0


def test_one_size_policy_refuses_other_sizes_unless_asked(tmp_path):
    Image.new("RGB", (300, 200), "white").save(tmp_path / "big.png")
    with pytest.raises(FormatError, match=r"big.png: image is 300x200, expected 256x256"):
        read_image(tmp_path, "big.png")
    assert read_image(tmp_path, "big.png", size=None).shape == (200, 300, 3)
    Image.new("RGB", (64, 64), "white").save(tmp_path / "small.png")
    assert read_image(tmp_path, "small.png", size=64).shape == (64, 64, 3)
    assert read_image(None, tmp_path / "small.png", size=64).shape == (64, 64, 3)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _hostile(tmp_path):
    Image.new("RGB", (256, 256), "white").save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (256, 256), "white").save(tmp_path / "ok.jpg", quality=90)
    jpg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("photo,sketch\n")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "bomb.png").write_bytes(_png_header_only(60000, 60000))
    (tmp_path / "bomb256.png").write_bytes(_png_header_only(256, 256))  # right header, data far too short
    cases = {"missing.png": "image not found", "folder.png": "is a directory", "empty.png": "empty file",
             "text.png": "not an image", "truncated.png": "truncated or corrupt",
             "truncated.jpg": "truncated or corrupt", "bomb256.png": "truncated or corrupt",
             "bomb.png": "decompression bomb"}
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.png")
        cases["fifo.png"] = "not a regular file"
    return cases


@pytest.mark.parametrize("size", [256, None])
def test_hostile_files_give_one_line_naming_the_file(tmp_path, size):
    for name, reason in _hostile(tmp_path).items():
        with pytest.raises(FormatError) as info:
            read_image(tmp_path, name, size=size)
        msg = str(info.value)
        assert name in msg and reason in msg and "\n" not in msg, (name, msg)


def test_bomb_is_refused_from_the_header_without_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(10000, 10000))  # our limit, below Pillow's
    (tmp_path / "huge.png").write_bytes(_png_header_only(60000, 60000))  # beyond Pillow's own limit
    assert 10000 * 10000 > MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    for name in ("bomb.png", "huge.png"):
        for size in (None, 256):
            with pytest.raises(FormatError, match="refused before decoding"):
                read_image(tmp_path, name, size=size)
    with pytest.raises(FormatError, match="10000x10000"):
        read_image(tmp_path, "bomb.png")


def test_unknown_mode_is_a_programming_error(sample):
    root, ann = sample
    with pytest.raises(ValueError, match="mode"):
        read_image(root, ann.photo[0], "bgr")
