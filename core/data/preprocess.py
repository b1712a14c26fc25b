"""The one preprocessing path used by training, evaluation, CLIs and the app.

`load_image` turns bytes or a path into an upright RGB PIL image (or raises `ImageError` with a
clear reason); `resize_uint8` gives the model-size uint8 array that the training cache stores;
`to_model_tensor` applies the model's colour constancy and normalises it. `preprocess` chains them for
inference. Every step reads the model's own config, so training, evaluation and the app feed it alike.
"""

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # matches server.maxUploadSize in .streamlit/config.toml
MAX_PIXELS = 40_000_000  # 6000x4500 photos pass; decompression bombs (e.g. 30000x30000) do not
MIN_SIDE_WARN = 64  # below this the lesion detail is mostly lost
MIN_SIDE = 2


class ImageError(ValueError):
    """An input that cannot be used as an image, with a message fit for a clinician."""


def _read_bytes(source) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"file not found: {path}")
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            raise ImageError(f"file is larger than the {MAX_UPLOAD_BYTES // 2**20} MB limit")
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"file is larger than the {MAX_UPLOAD_BYTES // 2**20} MB limit")
    return data


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; 16-bit and float images are rescaled rather than clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if im.mode.startswith("I;16"):
            arr = arr / 257.0
        elif hi > lo:
            arr = (arr - lo) / (hi - lo) * 255.0
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def load_image(source) -> Image.Image:
    """Decode a path, bytes or file-like object into an upright RGB image.

    Refuses empty, oversized, non-image and truncated files and decompression bombs (checked from
    the header, before any pixel is decoded). Multi-frame files give their first frame.
    """
    data = _read_bytes(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"image is {width}x{height} pixels, more than the {MAX_PIXELS // 1_000_000} megapixel limit"
                )
            if min(width, height) < MIN_SIDE:
                raise ImageError(f"image is only {width}x{height} pixels; too small to analyse")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image (expected JPEG or PNG)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"the image is damaged or truncated ({exc})") from None


def low_resolution_warning(image: Image.Image):
    """A warning string for images too small for reliable detail, else None."""
    if min(image.size) < MIN_SIDE_WARN:
        return (
            f"low resolution ({image.size[0]}x{image.size[1]}): fine structures are lost; "
            "interpret with extra caution"
        )
    return None


MAX_WORKING_SIDE = 1024


def working_copy(image: Image.Image, max_side: int = MAX_WORKING_SIDE) -> Image.Image:
    """The copy the app predicts on, explains and shows: very large photos downscaled (LANCZOS) to
    `max_side`, so that prediction and explanations see the same pixels."""
    if max(image.size) <= max_side:
        return image
    copy = image.copy()
    copy.thumbnail((max_side, max_side), Image.LANCZOS)
    return copy


def resize_uint8(image: Image.Image, size: int) -> np.ndarray:
    """Square model-size HxWx3 uint8 array (the whole field of view, antialiased)."""
    return np.array(image.resize((size, size), Image.BICUBIC, reducing_gap=3.0), dtype=np.uint8)  # writable


def shades_of_gray(x: torch.Tensor, p: int = 6) -> torch.Tensor:
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004; p = 6 as the ISIC 2019 winners used) on float
    NxCxHxW images in [0, 1]: each image's illuminant is its per-channel Minkowski p-mean, and the channels are
    rescaled so that it becomes neutral grey, removing the colour cast of the clinic's camera and light."""
    illuminant = x.pow(p).mean(dim=(2, 3), keepdim=True).pow(1.0 / p)
    illuminant = illuminant / illuminant.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return (x / (illuminant * 3 ** 0.5).clamp_min(1e-6)).clamp_(0.0, 1.0)


# ModelConfig.colour_constancy -> the function applied to [0, 1] float images before normalisation
COLOUR_CONSTANCY = {"none": lambda x: x, "shades_of_gray": shades_of_gray}


def to_model_tensor(batch_uint8: torch.Tensor, config) -> torch.Tensor:
    """An NxHxWx3 (or NxCxHxW) uint8 tensor as the model's float NxCxHxW input: its colour constancy, then its
    mean and std (`config`: the model's ModelConfig; there is no default a caller could silently get wrong)."""
    if batch_uint8.shape[-1] == 3 and batch_uint8.ndim == 4:
        batch_uint8 = batch_uint8.permute(0, 3, 1, 2)
    x = COLOUR_CONSTANCY[config.colour_constancy](batch_uint8.float().div_(255.0))
    m = torch.tensor(config.mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(config.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def preprocess(source, config) -> torch.Tensor:
    """Path/bytes/PIL image -> the model's 1x3xSxS float input (S: config.img_size)."""
    if isinstance(source, Image.Image):
        image = _to_rgb(ImageOps.exif_transpose(source))
    else:
        image = load_image(source)
    arr = torch.from_numpy(resize_uint8(image, config.img_size)).unsqueeze(0)
    return to_model_tensor(arr, config)
