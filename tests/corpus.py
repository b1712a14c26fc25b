"""The awkward and hostile input corpus: name -> (file name, bytes, expectation).

Expectations: "error:<text>" (refused with that message), "predict" (a prediction), "predict:<text>"
(a prediction with that warning), "uncertain" (refused as not a dermoscopic image: no diagnosis).
Valid odd formats are derived from a real fixture lesion so that their predictions are meaningful.
"""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURE_IMAGE = sorted((Path(__file__).parent / "fixtures" / "ham10000_tiny" / "images").glob("*.jpg"))[0]


def encode(im, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header announcing width x height 8-bit gray pixels, with only a few rows of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def build_corpus() -> dict:
    lesion = Image.open(FIXTURE_IMAGE).convert("RGB").resize((200, 150))
    jpeg = encode(lesion, "JPEG", quality=92)
    png = encode(lesion, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 8
    frames = [lesion, lesion.rotate(90), lesion.rotate(180)]
    gradient = np.linspace(0, 1, 6000, dtype=np.float32)[None, :, None] * np.linspace(0.6, 1, 4500, dtype=np.float32)[:, None, None]
    big = (np.array([190, 120, 100], dtype=np.float32) * gradient).astype(np.uint8)
    sky = np.zeros((150, 200, 3), dtype=np.uint8)
    sky[:80] = np.linspace([90, 150, 235], [150, 200, 250], 80).astype(np.uint8)[:, None, :]
    sky[80:] = np.array([40, 140, 50], dtype=np.uint8) + np.random.default_rng(0).integers(0, 30, (70, 200, 1), dtype=np.uint8)
    zip_bytes = b"PK\x03\x04" + b"\x00" * 26 + b"lesion.jpg" + b"\x00" * 64
    return {
        # broken
        "empty": ("empty.jpg", b"", "error:empty"),
        "text": ("notes.jpg", b"patient notes, not an image\n" * 5, "error:not a readable image"),
        "html": ("page.png", b"<!doctype html><html><body>hello</body></html>", "error:not a readable image"),
        "zip": ("archive.jpg", zip_bytes, "error:not a readable image"),
        "truncated_jpeg": ("cut.jpg", jpeg[: len(jpeg) // 2], "error:damaged or truncated"),
        "truncated_png": ("cut.png", png[: len(png) // 2], "error:damaged or truncated"),
        "one_pixel": ("dot.png", encode(Image.new("RGB", (1, 1), (120, 80, 60)), "PNG"), "error:too small"),
        # hostile
        "bomb_30000": ("bomb.png", png_bomb(30000, 30000), "error:bomb"),
        "bomb_9000": ("bomb9k.png", png_bomb(9000, 9000), "error:megapixel limit"),
        "oversize": ("huge.jpg", jpeg + b"\x00" * (26 * 1024 * 1024), "error:25 MB limit"),
        # odd but valid
        "grayscale": ("gray.png", encode(lesion.convert("L"), "PNG"), "uncertain"),  # dermoscopy is never greyscale
        "rgba": ("alpha.png", encode(lesion.convert("RGBA"), "PNG"), "predict"),
        "palette": ("palette.png", encode(lesion.convert("P", palette=Image.ADAPTIVE), "PNG"), "predict"),
        "cmyk_jpeg": ("cmyk.jpg", encode(lesion.convert("CMYK"), "JPEG"), "predict"),
        "png_16bit": ("deep.png", encode(Image.fromarray((np.asarray(lesion.convert("L"), dtype=np.uint16) * 257)), "PNG"), "uncertain"),
        "animated_gif": ("anim.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), "predict"),
        "multipage_tiff": ("pages.tif", encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "predict"),
        "exif_rotated": ("rotated.jpg", encode(lesion, "JPEG", exif=exif.tobytes()), "predict"),
        "jpeg_named_png": ("actually_jpeg.png", jpeg, "predict"),
        "very_large": ("camera.jpg", encode(Image.fromarray(big), "JPEG", quality=80), "predict"),
        "small": ("thumb.jpg", encode(lesion.resize((40, 30)), "JPEG"), "predict:low resolution"),
        "non_ascii_name": ("läsion_日本語 ✓.jpg", jpeg, "predict"),
        # not a lesion
        "all_black": ("black.png", encode(Image.new("RGB", (200, 150)), "PNG"), "uncertain"),
        "all_white": ("white.png", encode(Image.new("RGB", (200, 150), (255, 255, 255)), "PNG"), "uncertain"),
        "landscape_photo": ("holiday.jpg", encode(Image.fromarray(sky), "JPEG"), "uncertain"),
    }


def _png(array) -> bytes:
    return encode(Image.fromarray(np.asarray(array, dtype=np.uint8)), "PNG")


def _rendered_text() -> np.ndarray:
    from PIL import ImageDraw

    im = Image.new("RGB", (400, 300), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for row in range(12):
        draw.text((10, 10 + 24 * row), "Patient notes: lesion on the left forearm, 6 mm, changed since 2025.",
                  fill=(20, 20, 20))
    return np.asarray(im)


def build_negative_corpus() -> dict:
    """Images that are not dermoscopic lesion images, as a clinician might upload by mistake: name -> PNG bytes.
    Solid colours (skin tones among them), gradients, noise, rendered text, and scikit-image's sample photos
    (a person, a cat, a cup, a rocket, a space photo, a retinal fundus, a histology slide, scanned text...)."""
    import skimage.data

    rng = np.random.default_rng(0)
    skin = np.array([224, 172, 140], dtype=np.float32)
    ramp = np.linspace(0.55, 1.0, 200, dtype=np.float32)[None, :, None]
    corpus = {f"solid_{name}": _png(np.broadcast_to(np.array(rgb), (150, 200, 3))) for name, rgb in {
        "brown": (120, 80, 60), "pink": (230, 170, 170), "skin": (224, 172, 140), "tan": (210, 180, 140),
        "dark_red": (120, 20, 20), "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128)}.items()}
    corpus["brown_square_5px"] = _png(np.broadcast_to(np.array((120, 80, 60)), (5, 5, 3)))
    corpus["skin_gradient"] = _png(np.broadcast_to(skin * ramp, (150, 200, 3)))
    corpus["skin_noise"] = _png(np.clip(skin + rng.normal(0, 20, (150, 200, 3)), 0, 255))
    corpus["colour_noise"] = _png(rng.integers(0, 256, (150, 200, 3)))
    corpus["rendered_text"] = _png(_rendered_text())
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
                 "text", "page", "camera", "coins", "moon", "brick", "grass", "gravel", "colorwheel"):
        array = getattr(skimage.data, name)()
        corpus[f"skimage_{name}"] = encode(Image.fromarray(array).convert("RGB"), "PNG")
    return corpus
