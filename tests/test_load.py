"""Bounded load test on loopback: 20 concurrent browser sessions against the real `streamlit run app.py`.

Each session uploads a *different* held-out image (the Learn case bank is test-split only), so the
server computes every prediction and explanation rather than serving its cache; then the same 20
sessions run again to measure the cache-hit case separately. Zero errors; every answer equals the
single-session prediction computed in this process; server memory after the test stays within 1.5x
of its footprint once the models are loaded.

Prints time to prediction and time to all three explanations (p50/p95); README quotes
`python -m pytest tests/test_load.py -s -q`.
"""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, has_chromium

SESSIONS = 20
IMAGES = sorted((ROOT / "assets" / "learn").glob("case-*.jpg"))[:SESSIONS]
WARM_UP = sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[0]


def server_rss_mb(url: str) -> float:
    """Resident memory of the streamlit process listening on the url's port (read from /proc)."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(cmdline) and port.encode() in cmdline:
            status = (proc / "status").read_text()
            return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    raise AssertionError(f"no streamlit process on port {port}")


async def one_session(browser, url, image):
    """(seconds to the prediction, seconds to all three explanations, headline text, page errors)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url, timeout=600_000)
    await page.get_by_role("heading", name="Diagnose").wait_for(timeout=600_000)
    start = time.perf_counter()
    await page.locator("input[type=file]").first.set_input_files(str(image), timeout=600_000)
    await page.locator("[data-testid=stAlert]").first.wait_for(timeout=600_000)
    to_prediction = time.perf_counter() - start
    for method in ("Grad-CAM ·", "Score-CAM ·", "LIME ·"):
        await page.get_by_text(method).wait_for(timeout=600_000)
    to_explanations = time.perf_counter() - start
    headline = await page.locator("[data-testid=stAlert]").first.inner_text()
    body = await page.inner_text("body")
    if "Traceback" in body or "Something went wrong" in body:
        errors.append("error shown on the page")
    await context.close()
    return to_prediction, to_explanations, headline, errors


async def run(url):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        await one_session(browser, url, WARM_UP)  # loads the models; not one of the measured images
        idle_mb = server_rss_mb(url)
        rounds = []
        for _ in ("computed", "cached"):
            wall = time.perf_counter()
            results = await asyncio.gather(*(one_session(browser, url, image) for image in IMAGES))
            rounds.append((results, time.perf_counter() - wall))
        await browser.close()
    return rounds, idle_mb, server_rss_mb(url)


def expected_headline(classifier, image_path) -> tuple:
    from core.data.preprocess import load_image
    from core.predict import predict_image

    p = predict_image(classifier, load_image(image_path))
    return p.full_name, f"{p.confidence:.0%}"


@pytest.mark.skipif(not has_chromium(), reason="Debian chromium not installed (.ci/run installs it)")
def test_twenty_concurrent_sessions_distinct_images(server):
    from core.models.loader import load_model

    assert len(set(IMAGES)) == SESSIONS
    rounds, idle_mb, after_mb = asyncio.run(run(server))
    student = load_model("student")
    for (results, wall), label in zip(rounds, ("computed", "cached")):
        assert len(results) == SESSIONS
        for image, (_, _, headline, errors) in zip(IMAGES, results):
            assert not errors, errors
            name, confidence = expected_headline(student, image)
            assert name in headline and confidence in headline, (image.name, headline, name, confidence)
        pred = np.array([r[0] for r in results])
        expl = np.array([r[1] for r in results])
        print(f"\nload test ({label}): {SESSIONS} concurrent sessions, {len(set(IMAGES))} distinct images, wall "
              f"{wall:.1f} s; time to prediction p50 {np.percentile(pred, 50):.1f} s, p95 {np.percentile(pred, 95):.1f} s; "
              f"time to all three explanations p50 {np.percentile(expl, 50):.1f} s, p95 {np.percentile(expl, 95):.1f} s")
    print(f"server memory: {idle_mb:.0f} MB with models loaded, {after_mb:.0f} MB after the test "
          f"({after_mb / idle_mb:.2f}x)")
    assert after_mb <= 1.5 * idle_mb
