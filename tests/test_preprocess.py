"""The shared preprocessing path: odd PIL modes, EXIF orientation, and clear errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.preprocess import ImageError, load_image, preprocess
from core.models.pretrained import LITE_MEAN, LITE_STD


def encode(im, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


ODD_IMAGES = {
    "L": lambda: Image.new("L", (50, 40), 128),
    "RGBA": lambda: Image.new("RGBA", (50, 40), (200, 100, 50, 128)),
    "P": lambda: Image.new("RGB", (50, 40), (200, 100, 50)).convert("P"),
    "LA": lambda: Image.new("LA", (50, 40), (90, 200)),
    "I;16": lambda: Image.fromarray(np.full((40, 50), 40000, dtype=np.uint16)),
    "1": lambda: Image.new("1", (50, 40), 1),
    "CMYK": lambda: Image.new("CMYK", (50, 40), (0, 50, 100, 0)),
}


@pytest.mark.parametrize("mode", sorted(ODD_IMAGES))
def test_odd_modes_become_finite_model_tensors(mode):
    im = ODD_IMAGES[mode]()
    data = encode(im, "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG"))
    loaded = load_image(data)
    assert loaded.mode == "RGB" and loaded.size == (50, 40)
    x = preprocess(data, 112, LITE_MEAN, LITE_STD)
    assert x.shape == (1, 3, 112, 112) and torch.isfinite(x).all()


def test_16_bit_is_rescaled_not_clipped():
    im = Image.fromarray(np.full((10, 10), 40000, dtype=np.uint16))
    value = np.asarray(load_image(encode(im, "TIFF")))[0, 0, 0]
    assert value == round(40000 / 257)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (60, 30), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 30, 30))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    loaded = load_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (30, 60)
    top = np.asarray(loaded)[5, 15]
    assert top[2] > 150 and top[0] < 100  # the blue half is now on top


def test_pil_image_input_equals_bytes_input():
    im = Image.new("RGB", (40, 30), (10, 120, 200))
    assert torch.equal(preprocess(im, 64, LITE_MEAN, LITE_STD), preprocess(encode(im), 64, LITE_MEAN, LITE_STD))


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"<html>not an image</html>", "not a readable image"),
])
def test_clear_errors(data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(data)
