"""Image and mask reading: conversions, size policies, ellipse masks, and every bad-file case."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_helpers.data import images
from dagm_helpers.data.images import (
    ImageConversionWarning,
    apply_policy,
    ellipse_mask,
    load_sample,
    read_image,
    read_mask,
)
from dagm_helpers.data.layout import Ellipse, Sample
from dagm_helpers.errors import ConfigError, DatasetError, ImageFileError


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    im = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    im.save(path)
    return path


def _gradient(h: int = 64, w: int = 64) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but whose data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


# ----------------------------------------------------------------------------- images
def test_read_grey_png_unchanged(tmp_path):
    arr = _gradient(512, 512)
    out = read_image(_save(tmp_path / "a.PNG", arr))
    assert out.dtype == np.uint8 and out.shape == (512, 512)
    np.testing.assert_array_equal(out, arr)


def test_rgb_is_converted_with_warning(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 299/1000 * 255 = 76
    rgb[4:, :, :] = 200  # grey stays grey
    path = _save(tmp_path / "rgb.png", rgb)
    with pytest.warns(ImageConversionWarning, match=r"rgb\.png: RGB image converted to 8-bit grey"):
        out = read_image(path, policy="none")
    assert out.shape == (8, 8) and out.dtype == np.uint8
    assert out[0, 0] == 76 and out[7, 7] == 200


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_other_colour_modes_warn(tmp_path, mode):
    arr = np.full((8, 8), 120, np.uint8)
    path = _save(tmp_path / f"{mode}.png", arr, mode)
    assert Image.open(path).mode == mode
    with pytest.warns(ImageConversionWarning, match=str(path.name)):
        out = read_image(path, policy="none")
    assert out.shape == (8, 8) and abs(int(out[0, 0]) - 120) <= 1


def test_sixteen_bit_scaled_with_warning(tmp_path):
    arr = np.array([[0, 0x1234], [0x80FF, 0xFFFF]], np.uint16)
    path = _save(tmp_path / "deep.png", arr)
    assert Image.open(path).mode in ("I;16", "I")
    with pytest.warns(ImageConversionWarning, match="16-bit"):
        out = read_image(path, policy="none")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0x12], [0x80, 0xFF]])


def test_twelve_bit_data_in_a_sixteen_bit_file_is_named_in_the_warning(tmp_path):
    arr = np.array([[0, 1000], [2000, 4095]], np.uint16)  # a 12-bit camera's values
    path = _save(tmp_path / "cam12.png", arr)
    with pytest.warns(ImageConversionWarning, match=r"only reach 4095 \(10- or 12-bit data\?\).*value >> 4"):
        out = read_image(path, policy="none")
    np.testing.assert_array_equal(out, [[0, 3], [7, 15]])


def test_bilevel_image_no_warning(tmp_path, recwarn):
    arr = np.zeros((8, 8), np.uint8)
    arr[:4] = 255
    out = read_image(_save(tmp_path / "bw.png", arr, "1"), policy="none")
    assert set(np.unique(out)) == {0, 255}
    assert not [w for w in recwarn if issubclass(w.category, ImageConversionWarning)]


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.PNG"
    path.write_bytes(b"")
    with pytest.raises(ImageFileError, match=r"empty\.PNG: the file is empty \(0 bytes\); re-download"):
        read_image(path)


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    good = _save(tmp_path / "good.png", rng.integers(0, 256, (128, 128), dtype=np.uint8))
    data = good.read_bytes()
    path = tmp_path / "trunc.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFileError, match=r"trunc\.png: the file is empty, truncated or not an image"):
        read_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "noise.PNG"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageFileError, match=r"noise\.PNG: .*re-download or re-export it"):
        read_image(path)


def test_corrupt_pixel_data(tmp_path):
    good = _save(tmp_path / "good.png", _gradient(64, 64))
    data = bytearray(good.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = b"\x00" * 40  # destroy the zlib stream (the CRC no longer matches either)
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match=r"bad\.png"):
        read_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageFileError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageFileError, match="is a folder"):
        read_image(tmp_path)


def test_huge_image_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "huge.png", 9000, 9000)  # 81 Mpx > 64 Mi px
    with pytest.raises(
        ImageFileError, match=r"huge\.png: 9000x9000 pixels .* above the limit of 67 megapixels"
    ):
        read_image(path)


def test_decompression_bomb_refused(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 40000, 40000)  # Pillow's own bomb check fires first
    with pytest.raises(ImageFileError, match=r"bomb\.png: refused, the image is far too large"):
        read_image(path)


def test_max_pixels_is_the_bound(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.png", _gradient(64, 64))
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64 - 1)
    with pytest.raises(ImageFileError, match="above the limit"):
        read_image(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64)
    assert read_image(path, policy="none").shape == (64, 64)


# ----------------------------------------------------------------------------- policies
def test_resize_500_to_512(tmp_path):
    arr = np.full((500, 500), 77, np.uint8)
    arr[:, 250:] = 177
    out = read_image(_save(tmp_path / "a.png", arr))
    assert out.shape == (512, 512) and out.dtype == np.uint8
    assert out[0, 0] == 77 and out[-1, -1] == 177
    assert set(np.unique(out)) <= set(range(77, 178))


def test_pad_500_to_512_reflects(tmp_path):
    arr = _gradient(500, 500)
    out = read_image(_save(tmp_path / "a.png", arr), policy="pad")
    assert out.shape == (512, 512)
    np.testing.assert_array_equal(out[:500, :500], arr)
    np.testing.assert_array_equal(out[500, :500], arr[498])  # reflect: mirror without repeating the edge
    np.testing.assert_array_equal(out[:500, 511], arr[:, 487])  # column 500 + 11 mirrors 499 - 12


@pytest.mark.parametrize(
    "shape, padded", [((333, 517), (336, 528)), ((512, 512), (512, 512)), ((1, 5), (16, 16))]
)
def test_pad_shapes(shape, padded):
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert apply_policy(arr, policy="pad").shape == padded
    mask = (arr > 128).astype(np.uint8)
    assert set(np.unique(apply_policy(mask, policy="pad", mask=True))) <= {0, 1}


def test_none_policy_keeps_size(tmp_path):
    arr = _gradient(33, 51)
    np.testing.assert_array_equal(read_image(_save(tmp_path / "a.png", arr), policy="none"), arr)


def test_bad_policy_and_size(tmp_path):
    path = _save(tmp_path / "a.png", _gradient(8, 8))
    with pytest.raises(ConfigError, match="unknown size policy 'crop'"):
        read_image(path, policy="crop")
    with pytest.raises(ConfigError, match="positive whole number"):
        read_image(path, size=0)


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("high", [255, 1])
def test_mask_values_become_0_1(tmp_path, high):
    m = np.zeros((500, 500), np.uint8)
    m[100:300, 200:260] = high
    out = read_mask(_save(tmp_path / "m.png", m))
    assert out.shape == (512, 512) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1}
    assert out.sum() == pytest.approx(200 * 60 * (512 / 500) ** 2, rel=0.03)
    same = read_mask(tmp_path / "m.png", policy="none")
    np.testing.assert_array_equal(same, (m > 0).astype(np.uint8))


def test_mask_single_value_and_bilevel(tmp_path):
    assert read_mask(_save(tmp_path / "z.png", np.zeros((8, 8), np.uint8)), policy="none").sum() == 0
    assert read_mask(_save(tmp_path / "f.png", np.full((8, 8), 255, np.uint8)), policy="none").sum() == 64
    m = np.zeros((8, 8), np.uint8)
    m[:2] = 255
    assert read_mask(_save(tmp_path / "b.png", m, "1"), policy="none").sum() == 16


def test_mask_sixteen_bit(tmp_path):
    m = np.zeros((8, 8), np.uint16)
    m[:3] = 65535
    assert read_mask(_save(tmp_path / "m16.png", m), policy="none").sum() == 24


def test_mask_not_binary(tmp_path):
    m = np.zeros((16, 16), np.uint8)
    m[4:8] = 128
    m[8:] = 255
    path = _save(tmp_path / "grey_label.PNG", m)
    with pytest.raises(
        ImageFileError, match=r"grey_label\.PNG: a mask must hold two values .* found 0, 128, 255"
    ):
        read_mask(path)


def test_mask_size_mismatch_names_both(tmp_path):
    image = _save(tmp_path / "0001.PNG", _gradient(64, 64))
    mask = _save(tmp_path / "0001_label.PNG", np.zeros((60, 64), np.uint8))
    with pytest.raises(ImageFileError) as exc:
        read_mask(mask, expect_shape=(64, 64), image_path=image)
    msg = str(exc.value)
    assert "0001_label.PNG" in msg and "0001.PNG" in msg and "64x60" in msg and "64x64" in msg
    sample = Sample(1, "Train", "0001", image, mask, True)
    with pytest.raises(
        ImageFileError, match=r"0001_label\.PNG: the mask is 64x60 .* its image .*0001\.PNG is 64x64"
    ):
        load_sample(sample)


def test_rgb_mask_converted(tmp_path):
    m = np.zeros((8, 8, 3), np.uint8)
    m[:4] = 255
    with pytest.warns(ImageConversionWarning):
        out = read_mask(_save(tmp_path / "m.png", m), policy="none")
    assert out.sum() == 32


def test_resized_mask_is_nearest_and_binary():
    m = np.zeros((500, 500), np.uint8)
    m[::2, ::2] = 1  # a pattern bilinear would smear into 0.25s
    out = apply_policy(m, 512, "resize", mask=True)
    assert set(np.unique(out)) == {0, 1}


# ----------------------------------------------------------------------------- ellipses
@pytest.mark.parametrize("angle", [0.0, 0.4, -1.1, math.pi / 2, 2.08073, 7.0])
def test_ellipse_area_centre_orientation(angle):
    e = Ellipse(a=60.0, b=20.0, angle=angle, cx=250.3, cy=200.7)
    m = ellipse_mask((512, 512), e)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    assert m.sum() == pytest.approx(math.pi * 60 * 20, rel=0.02)
    ys, xs = np.nonzero(m)
    assert xs.mean() == pytest.approx(250.3, abs=0.5) and ys.mean() == pytest.approx(200.7, abs=0.5)
    # the a axis points along (cos angle, sin angle) in (x, y-down) pixel coordinates
    cov = np.cov(np.stack([xs - xs.mean(), ys - ys.mean()]))
    major = np.linalg.eigh(cov)[1][:, 1]
    assert abs(float(major @ [math.cos(angle), math.sin(angle)])) == pytest.approx(1.0, abs=1e-3)


def test_ellipse_positive_angle_turns_towards_plus_y():
    m = ellipse_mask((200, 200), Ellipse(80.0, 5.0, math.pi / 4, 100.0, 100.0))
    assert m[150, 150] == 1 and m[50, 50] == 1  # the diagonal from top-left to bottom-right
    assert m[50, 150] == 0 and m[150, 50] == 0


def test_ellipse_clipped_at_border():
    m = ellipse_mask((64, 64), Ellipse(30.0, 10.0, 0.0, 0.0, 0.0))
    assert m.shape == (64, 64) and 0 < m.sum() < math.pi * 300 / 4 * 1.1
    assert ellipse_mask((16, 16), Ellipse(1e6, 1e6, 0.0, 8.0, 8.0)).sum() == 256


# ----------------------------------------------------------------------------- samples
def test_load_sample_clean_official_and_dev(tmp_path):
    img = _save(tmp_path / "0001.PNG", _gradient(500, 500))
    clean = Sample(1, "Test", "0001", img, None, False)
    x, y = load_sample(clean)
    assert x.shape == y.shape == (512, 512) and y.sum() == 0 and x.dtype == y.dtype == np.uint8

    m = np.zeros((500, 500), np.uint8)
    m[10:60, 10:60] = 255
    mask = _save(tmp_path / "0001_label.PNG", m)
    x, y = load_sample(Sample(1, "Test", "0001", img, mask, True), policy="pad")
    assert x.shape == y.shape == (512, 512) and y[:500, :500].sum() == 2500

    dev_img = _save(tmp_path / "1.png", _gradient(256, 256))
    e = Ellipse(40.0, 10.0, 0.3, 128.0, 100.0)
    x, y = load_sample(Sample(1, "Train", "1", dev_img, None, True, e), size=512)
    assert x.shape == y.shape == (512, 512)
    assert y.sum() == pytest.approx(4 * math.pi * 40 * 10, rel=0.03)  # drawn at 256, then scaled x2
    ys, xs = np.nonzero(y)
    assert xs.mean() == pytest.approx(2 * 128 + 0.5, abs=1.5) and ys.mean() == pytest.approx(
        2 * 100 + 0.5, abs=1.5
    )


def test_load_sample_defective_without_label(tmp_path):
    img = _save(tmp_path / "0001.PNG", _gradient(16, 16))
    with pytest.raises(DatasetError, match="neither a mask file nor an ellipse"):
        load_sample(Sample(1, "Train", "0001", img, None, True))


def test_a_defective_sample_with_an_empty_mask_is_said(tmp_path):
    """Labels.txt says defective but the mask file holds no defect pixel: a warning naming both."""
    from dagm_helpers.data.images import DagmWarning, load_sample
    from dagm_helpers.data.layout import Sample

    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / "0001.PNG")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "0001_label.PNG")
    sample = Sample(1, "Train", "0001", tmp_path / "0001.PNG", tmp_path / "0001_label.PNG", True)
    with pytest.warns(DagmWarning, match=r"0001_label.PNG: the mask is empty although 0001.PNG is listed"):
        image, mask = load_sample(sample, policy="none")
    assert image.shape == mask.shape == (32, 32) and not mask.any()


def test_conversions_are_said_once_per_block_across_threads_and_nested_blocks(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    paths = [_save(tmp_path / f"c{i}.png", np.full((8, 8, 3), i, np.uint8)) for i in range(5)]
    grey = _save(tmp_path / "g.png", np.zeros((8, 8), np.uint8))
    with pytest.warns(ImageConversionWarning) as record:
        with images.conversions_said_once(6):
            read_image(paths[0], policy="none")
            with images.conversions_said_once(5):  # an inner block hands its messages outwards
                with ThreadPoolExecutor(2) as pool:
                    list(pool.map(lambda p: read_image(p, policy="none"), paths[1:] + [grey]))
    said = [str(w.message) for w in record if issubclass(w.category, ImageConversionWarning)]
    assert len(said) == 1 and said[0].startswith("5 of 6 images were converted on reading, for example ")
    assert "c0.png" in said[0]
    with pytest.warns(ImageConversionWarning) as record:  # one file: its own message
        with images.conversions_said_once(3):
            read_image(paths[1], policy="none")
    assert [str(w.message).split(" (")[0] for w in record] == [
        f"{paths[1]}: RGB image converted to 8-bit grey"
    ]
    assert images._gathering == []  # every block closed, also after the inner one
    with pytest.warns(ImageConversionWarning, match="c2.png"):  # outside a block: per file again
        read_image(paths[2], policy="none")
