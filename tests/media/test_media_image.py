import io

import numpy as np
import pytest
from PIL import Image

from vov.errors import MediaError
from vov.media import MAX_SIDE, load_image, pad_to_multiple, save_image


def encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_png(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    pic = load_image(path)
    assert (pic.height, pic.width) == (33, 47) and not pic.grey and not pic.had_alpha
    np.testing.assert_array_equal(pic.to_uint8_rgb(), arr)


def test_grey_kept_as_grey():
    pic = load_image(encode(Image.new("L", (64, 64), 77)))
    assert pic.grey and pic.pixels.shape == (64, 64, 3)
    assert np.allclose(pic.pixels, 77 / 255)


def test_sixteen_bit_grey_full_precision():
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    pic = load_image(encode(Image.fromarray(arr)))
    assert pic.bits == 16 and pic.grey
    np.testing.assert_allclose(pic.pixels[..., 0], arr / 65535.0, atol=1e-6)


def test_alpha_composited_over_white():
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, half transparent
    rgba[..., 3] = 128
    pic = load_image(encode(Image.fromarray(rgba, "RGBA")))
    assert pic.had_alpha
    a = 128 / 255
    np.testing.assert_allclose(pic.pixels[0, 0], [1.0, 1 - a, 1 - a], atol=1e-6)


def test_opaque_alpha_is_not_reported():
    pic = load_image(encode(Image.new("RGBA", (20, 20), (1, 2, 3, 255))))
    assert not pic.had_alpha


def test_palette_and_jpeg_and_webp():
    for data in (encode(Image.new("RGB", (30, 20), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE)),
                 encode(Image.new("RGB", (30, 20), (10, 200, 30)), "JPEG", quality=95),
                 encode(Image.new("RGB", (30, 20), (10, 200, 30)), "WEBP", lossless=True)):
        pic = load_image(data)
        assert pic.pixels.shape == (20, 30, 3)
        assert np.allclose(pic.pixels[5, 5], [10 / 255, 200 / 255, 30 / 255], atol=3 / 255)


def test_exif_orientation_applied():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    pic = load_image(encode(img, "JPEG", exif=exif, quality=95))
    assert (pic.height, pic.width) == (40, 20)
    assert pic.pixels[2, 10].mean() > 0.9 and pic.pixels[-3, 10].mean() < 0.1  # white ends up on top


def test_limits():
    with pytest.raises(MediaError, match="smallest side"):
        load_image(encode(Image.new("RGB", (8, 100))))
    with pytest.raises(MediaError, match="pixels a side"):
        load_image(encode(Image.new("L", (MAX_SIDE + 1, 16))))


def test_not_an_image(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"this is text, not pixels")
    with pytest.raises(MediaError, match="not an image"):
        load_image(path)
    with pytest.raises(MediaError, match="no such file"):
        load_image(tmp_path / "missing.png")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(64))
    with pytest.raises(MediaError, match="a video, where a still image is expected"):
        load_image(clip)


def test_truncated_image():
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(MediaError):
        load_image(data[: len(data) // 2])


def test_pad_replicates_edges():
    arr = np.arange(3 * 5 * 3, dtype=np.float32).reshape(3, 5, 3)
    out = pad_to_multiple(arr, 4)
    assert out.shape == (4, 8, 3)
    np.testing.assert_array_equal(out[3], out[2])
    np.testing.assert_array_equal(out[:3, 7], arr[:, 4])


def test_save_grey_and_rgb(tmp_path):
    pixels = np.full((10, 12, 3), 0.5, dtype=np.float32)
    save_image(pixels, tmp_path / "g.png", grey=True)
    save_image(pixels, tmp_path / "c.png")
    assert Image.open(tmp_path / "g.png").mode == "L"
    assert Image.open(tmp_path / "c.png").mode == "RGB"
