"""Bounded load test on loopback: 20 concurrent sessions against the real `streamlit run app.py`, and one real
browser among them.

Each session uploads a *different* held-out image (the Learn case bank is test-split only), so the
server computes every prediction and explanation rather than serving its cache; then the same 20
sessions run again to measure the cache-hit case separately. The 20 sessions speak Streamlit's wire
protocol (tests/streamlit_client.py: the same messages, upload and image fetches as a browser tab, no
rendering), because 20 headless Chromium instances on this 2-core machine would measure their own
rendering more than the server. One Chromium tab runs alongside the computed round, on a 21st image, to
report what a rendering browser sees under that load (where Debian's chromium is installed; .ci/run installs it). Zero errors; every answer equals the
single-session prediction computed in this process; server memory after the test stays within 1.5x of
its footprint once the models are loaded.

Prints time to prediction and time to all three explanations (p50/p95); README quotes
`python -m pytest tests/test_load.py -s -q`.
"""

import asyncio
import time
from pathlib import Path

import numpy as np

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, has_chromium
from tests.streamlit_client import StreamlitSession

SESSIONS = 20
CASES = sorted((ROOT / "assets" / "learn").glob("case-*.jpg"))
WARM_UP = sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[:2]
METHOD_CAPTIONS = ("Grad-CAM ·", "Score-CAM ·", "LIME ·")
HEADLINE_TEXTS = ("calibrated confidence", "no confident answer")  # the prediction's alert, sure or uncertain


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


async def protocol_session(url, image):
    """(seconds to the prediction, seconds to all three explanations, headline text, errors, seconds to open the
    page) of one session that opens the app and uploads `image`, timed from the upload's start to the arrival of
    the messages and images."""
    async with StreamlitSession(url) as session:
        opened = (await session.run()).finished
        start = time.perf_counter()
        info = await session.upload(image.name, image.read_bytes())
        log = await session.run([session.uploader_state([info])])
    upload = log.started - start
    to_prediction, headline = log.alert(*HEADLINE_TEXTS)
    shown = [log.caption_time(c) for c in METHOD_CAPTIONS]
    errors = log.exceptions + [f"no {c}" for c, t in zip(METHOD_CAPTIONS, shown) if t is None]
    if to_prediction is None or errors:
        return None, None, headline, errors or ["no prediction"], opened
    return upload + to_prediction, upload + max(shown), headline, errors, opened


async def browser_session(url, image):
    """The same measurement in a real Chromium tab (Playwright), rendering everything (the page's opening is
    not timed: None)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 1600})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url, timeout=600_000)
        await page.get_by_role("heading", name="Diagnose").wait_for(timeout=600_000)
        start = time.perf_counter()
        await page.locator("input[type=file]").first.set_input_files(str(image), timeout=600_000)
        alert = page.locator("[data-testid=stAlert]").filter(has_text=HEADLINE_TEXTS[0])
        alert = alert.or_(page.locator("[data-testid=stAlert]").filter(has_text=HEADLINE_TEXTS[1])).first
        await alert.wait_for(timeout=600_000)  # not the "Upload ..." hint shown before
        to_prediction = time.perf_counter() - start
        for method in METHOD_CAPTIONS:
            await page.get_by_text(method).wait_for(timeout=600_000)
        to_explanations = time.perf_counter() - start
        headline = await alert.inner_text()
        if "Traceback" in await page.inner_text("body"):
            errors.append("traceback shown on the page")
        await browser.close()
    return to_prediction, to_explanations, headline, errors, None


def answered_cases(classifier, n: int) -> list:
    """The first `n` held-out cases the input gate accepts (about 0.3% of real lesions are refused as unlike the
    training images, and a refused image gets no maps to wait for)."""
    from core.data.preprocess import load_image
    from core.registry.predict import predict_image

    return [c for c in CASES if predict_image(classifier, load_image(c)).dermoscopic][:n]


async def settled_rss_mb(url, timeout: float = 120.0) -> float:
    """The server's memory once its background warm-up (all models, the student's ONNX twin) is done: two readings
    3 s apart within 1%."""
    deadline, last = time.perf_counter() + timeout, server_rss_mb(url)
    while time.perf_counter() < deadline:
        await asyncio.sleep(3)
        now = server_rss_mb(url)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


async def run(url, images, browser_image):
    for image in WARM_UP:  # the models' background warm-up, then each worker's first maps; not measured images
        await protocol_session(url, image)
    idle_mb = await settled_rss_mb(url)
    rounds = []
    for label in ("computed", "cached"):
        wall = time.perf_counter()
        with_browser = [browser_session(url, browser_image)] if label == "computed" and has_chromium() else []
        results = await asyncio.gather(*(protocol_session(url, image) for image in images), *with_browser)
        rounds.append((label, results[:SESSIONS], results[SESSIONS:], time.perf_counter() - wall))
    return rounds, idle_mb, server_rss_mb(url)


def expected_headline(classifier, image_path) -> tuple:
    from core.data.preprocess import load_image
    from core.registry.predict import predict_image

    p = predict_image(classifier, load_image(image_path))
    return p.full_name, f"{p.confidence:.0%}"


def percentiles(values) -> str:
    return f"p50 {np.percentile(values, 50):.1f} s, p95 {np.percentile(values, 95):.1f} s"


def test_twenty_concurrent_sessions_distinct_images(server):
    from core.registry.loader import load_model

    student = load_model("student")
    *images, browser_image = answered_cases(student, SESSIONS + 1)
    assert len(set(images + [browser_image])) == SESSIONS + 1
    rounds, idle_mb, after_mb = asyncio.run(run(server, images, browser_image))
    for label, results, browser, wall in rounds:
        assert len(results) == SESSIONS
        for image, (_, _, headline, errors, _) in zip(images + [browser_image], results + browser):
            assert not errors, (image.name, errors)
            name, confidence = expected_headline(student, image)
            assert name in headline and confidence in headline, (image.name, headline, name, confidence)
        print(f"\nload test ({label}): {SESSIONS} concurrent sessions, {len(set(images))} distinct images, wall "
              f"{wall:.1f} s; time to prediction {percentiles([r[0] for r in results])}; "
              f"time to all three explanations {percentiles([r[1] for r in results])}; "
              f"opening the page (no upload yet) {percentiles([r[4] for r in results])}")
        for to_prediction, to_explanations, *_ in browser:
            print(f"  one Chromium tab alongside, a 21st image: prediction {to_prediction:.1f} s, "
                  f"all three explanations {to_explanations:.1f} s")
    print(f"server memory: {idle_mb:.0f} MB with models loaded, {after_mb:.0f} MB after the test "
          f"({after_mb / idle_mb:.2f}x)")
    assert after_mb <= 1.5 * idle_mb
