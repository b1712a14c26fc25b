"""Bounded load test: 20 concurrent AppTest sessions sharing the cached models, each upload -> prediction
-> explanations (Grad-CAM, Score-CAM, LIME). Zero errors, predictions identical to a single session.

Prints p50/p95 seconds per request; README quotes a run on the shipped models:
`python -m pytest tests/test_load.py -s`.
"""

import threading
import time

import numpy as np
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

SESSIONS = 20
IMAGES = sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[:4]


def session(image):
    """One user: open the app, upload an image; returns (seconds for the upload request, headline, errors)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.file_uploader[0].set_value([(image.name, image.read_bytes(), "image/jpeg")])
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    headline = [e.value for e in list(at.success) + list(at.warning) + list(at.error)]
    problems = [str(e.value) for e in at.exception] + [e.value for e in at.error]
    return seconds, headline, problems


def test_twenty_concurrent_sessions(monkeypatch):
    if not (ROOT / "weights" / "manifest.json").is_file():
        import pytest
        pytest.skip("no shipped models in weights/")
    monkeypatch.setenv("DERMADISTILL_WEIGHTS", str(ROOT / "weights"))
    st.cache_resource.clear()
    reference = {img: session(img)[1] for img in IMAGES}  # single-session answers
    results, lock = [], threading.Lock()

    def user(i):
        image = IMAGES[i % len(IMAGES)]
        outcome = session(image)
        with lock:
            results.append((image, *outcome))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(SESSIONS)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    assert len(results) == SESSIONS
    for image, _, headline, problems in results:
        assert not problems, problems
        assert headline == reference[image]
    seconds = np.array([r[1] for r in results])
    print(f"\nload test: {SESSIONS} concurrent sessions, wall {wall:.1f} s, per request "
          f"p50 {np.percentile(seconds, 50):.1f} s, p95 {np.percentile(seconds, 95):.1f} s")
