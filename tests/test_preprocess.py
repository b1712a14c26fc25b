"""The shared preprocessing path: odd PIL modes, EXIF orientation, and clear errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.preprocess import ImageError, load_image, preprocess, to_model_tensor
from core.models.factory import DEFAULT_CONFIGS

CFG64 = DEFAULT_CONFIGS["student"](64)


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
    x = preprocess(data, DEFAULT_CONFIGS["student"](112))
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


def test_shades_of_gray_removes_a_global_colour_cast():
    """A model configured for Shades-of-Gray gets the same input whatever the camera's per-channel gain; without
    it, the cast reaches the model."""
    rng = np.random.default_rng(0)
    lesion = rng.integers(40, 160, size=(1, 32, 32, 3)).astype(np.float64)
    cast = np.clip(np.round(lesion * (1.3, 1.0, 0.7)), 0, 255)  # a warm light: no pixel clipped
    as_tensor = lambda a: torch.from_numpy(a.astype(np.uint8))  # noqa: E731
    corrected = DEFAULT_CONFIGS["student"](32)
    corrected.colour_constancy = "shades_of_gray"
    assert torch.allclose(to_model_tensor(as_tensor(lesion), corrected), to_model_tensor(as_tensor(cast), corrected),
                          atol=0.05)
    assert not torch.allclose(to_model_tensor(as_tensor(lesion), CFG64), to_model_tensor(as_tensor(cast), CFG64),
                              atol=0.05)
    orange = to_model_tensor(as_tensor(np.full((1, 4, 4, 3), (200, 120, 60), np.float64)), corrected)
    unnormalised = orange * torch.tensor(corrected.std).view(1, 3, 1, 1) + torch.tensor(corrected.mean).view(1, 3, 1, 1)
    assert torch.allclose(unnormalised, unnormalised[:, :1].expand_as(unnormalised), atol=1e-5)  # neutral grey


def test_pil_image_input_equals_bytes_input():
    im = Image.new("RGB", (40, 30), (10, 120, 200))
    assert torch.equal(preprocess(im, CFG64), preprocess(encode(im), CFG64))


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"<html>not an image</html>", "not a readable image"),
])
def test_clear_errors(data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(data)
