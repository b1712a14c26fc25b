"""Bad input never raises anything but a clear ImageError; the app answers each and keeps working."""

import tracemalloc

import numpy as np
import pytest
import streamlit as st
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data.preprocess import ImageError, load_image, preprocess
from core.models.factory import DEFAULT_CONFIGS
from core.registry.loader import load_model
from core.registry.predict import NOT_DERMOSCOPIC, predict_image
from core.service.auth import LoginThrottle, password_matches
from tests.conftest import ROOT
from tests.corpus import build_corpus

CORPUS = build_corpus()


@pytest.fixture(scope="module")
def student(tiny_weights):
    return load_model(tiny_weights / "student.pt")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_item(student, name):
    filename, data, expectation = CORPUS[name]
    kind, _, detail = expectation.partition(":")
    if kind == "error":
        with pytest.raises(ImageError, match=detail):
            load_image(data)
        return
    prediction = predict_image(student, load_image(data))
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-4
    if kind == "uncertain":
        assert not prediction.dermoscopic and any(NOT_DERMOSCOPIC in r for r in prediction.reasons)
    if detail:
        assert any(detail in w for w in prediction.warnings)


def test_multiframe_gives_first_frame_and_exif_is_upright():
    first = load_image(CORPUS["animated_gif"][1])
    assert first.size == (200, 150)
    rotated = load_image(CORPUS["exif_rotated"][1])
    assert rotated.size == (150, 200)  # orientation 8: displayed rotated by 90 degrees


def test_bomb_refused_before_decoding_with_bounded_memory():
    tracemalloc.start()
    with pytest.raises(ImageError):
        load_image(CORPUS["bomb_30000"][1])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20  # a decoded 30000x30000 image would need 900 MB


@settings(max_examples=60, deadline=None)
@given(width=hs.integers(1, 300), height=hs.integers(1, 300),
       mode=hs.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I", "F", "I;16"]),
       fmt=hs.sampled_from(["PNG", "TIFF", "JPEG", "GIF", "BMP", "WEBP"]), seed=hs.integers(0, 2**16))
def test_preprocess_property(width, height, mode, fmt, seed):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    try:
        from tests.corpus import encode
        data = encode(im, fmt)
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode: nothing to decode
    try:
        x = preprocess(data, DEFAULT_CONFIGS["student"](64))
    except ImageError as exc:
        assert str(exc)
        return
    assert x.shape == (1, 3, 64, 64) and torch.isfinite(x).all()


def test_app_answers_every_bad_upload_and_keeps_working(tiny_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(tiny_weights))
    monkeypatch.chdir(tmp_path)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    broken = [CORPUS[n] for n in sorted(CORPUS) if CORPUS[n][2].startswith("error")]
    at.file_uploader[0].set_value([(f, d, "image/png") for f, d, _ in broken] + [(f"../../{CORPUS['grayscale'][0]}",
                                                                              CORPUS["grayscale"][1], "image/png")])
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    for filename, _, expectation in broken:
        assert filename in errors and expectation.split(":", 1)[1] in errors
    at.file_uploader[0].set_value([(f, d, "image/jpeg") for f, d, e in CORPUS.values() if not e.startswith("error")])
    at.run()
    assert not at.exception
    # red boxes only for the refusal of a non-dermoscopic image or a referral
    assert not [e.value for e in at.error if "Not a dermoscopic image" not in e.value and "Refer:" not in e.value]
    assert list(tmp_path.iterdir()) == []  # uploads never touch the disk
    assert "Traceback" not in " ".join(e.value for e in at.markdown)


def test_login_throttle_backs_off_and_resets():
    now = [0.0]
    throttle = LoginThrottle(base=1, cap=8, clock=lambda: now[0])
    assert throttle.wait_seconds("a") == 0
    for expected in (1, 2, 4, 8, 8):
        throttle.failure("a")
        assert throttle.wait_seconds("a") == expected
    assert throttle.wait_seconds("b") == 0
    now[0] = 100
    assert throttle.wait_seconds("a") == 0
    throttle.success("a")
    throttle.failure("a")
    assert throttle.wait_seconds("a") == 101 - 100


def test_password_comparison():
    assert password_matches("s3cret", "s3cret")
    assert not password_matches("s3cret ", "s3cret") and not password_matches("", "s3cret")


def test_admin_session_token_survives_a_refresh_only_while_it_should():
    """The refresh cookie: valid until its expiry, for this process's secret and this password only."""
    from core.service.auth import session_token, session_token_valid

    secret = b"k" * 32
    token = session_token("s3cret", now=1000, hours=1, secret=secret)
    assert session_token_valid(token, "s3cret", now=1000 + 3599, secret=secret)
    assert not session_token_valid(token, "s3cret", now=1000 + 3601, secret=secret)  # expired
    assert not session_token_valid(token, "changed", now=1001, secret=secret)  # the password changed
    assert not session_token_valid(token, "s3cret", now=1001, secret=b"r" * 32)  # the server restarted
    expiry, mac = token.split(".")
    assert not session_token_valid(f"{int(expiry) + 3600}.{mac}", "s3cret", now=1001, secret=secret)  # extended
    for junk in (None, "", "abc", "1.2.3", f"{expiry}."):
        assert not session_token_valid(junk, "s3cret", now=1001, secret=secret)
