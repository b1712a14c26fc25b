"""Bounded load test on loopback: 20 concurrent browser sessions against the real `streamlit run app.py`,
sharing its cached models; each uploads an image and waits for the prediction and all three explanations.
Zero errors, and every session's answer identical to a single-session run.

Prints p50/p95 seconds per request (upload -> last explanation shown); README quotes
`python -m pytest tests/test_load.py -s -q`.
"""

import asyncio
import time

import numpy as np
import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, has_chromium

SESSIONS = 20
IMAGES = sorted((ROOT / "assets" / "gallery").glob("*.jpg"))[:4]


async def one_session(browser, url, image):
    """(seconds from upload to the LIME overlay, headline text, page errors)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url, timeout=600_000)
    await page.get_by_role("heading", name="Diagnose").wait_for(timeout=600_000)
    start = time.perf_counter()
    await page.locator("input[type=file]").first.set_input_files(str(image))
    await page.get_by_text("LIME ·").wait_for(timeout=600_000)
    seconds = time.perf_counter() - start
    headline = await page.locator("[data-testid=stAlert]").first.inner_text()
    body = await page.inner_text("body")
    if "Traceback" in body or "Something went wrong" in body:
        errors.append("error shown on the page")
    await context.close()
    return seconds, headline, errors


async def run(url):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        reference = {}
        for image in IMAGES:
            reference[image] = (await one_session(browser, url, image))[1]
        wall = time.perf_counter()
        results = await asyncio.gather(*(one_session(browser, url, IMAGES[i % len(IMAGES)]) for i in range(SESSIONS)))
        wall = time.perf_counter() - wall
        await browser.close()
    return reference, results, wall


@pytest.mark.skipif(not has_chromium(), reason="Debian chromium not installed (.ci/run installs it)")
def test_twenty_concurrent_sessions(server):
    reference, results, wall = asyncio.run(run(server))
    assert len(results) == SESSIONS
    for i, (seconds, headline, errors) in enumerate(results):
        assert not errors, errors
        assert headline == reference[IMAGES[i % len(IMAGES)]]
    seconds = np.array([r[0] for r in results])
    print(f"\nload test: {SESSIONS} concurrent browser sessions, wall {wall:.1f} s, per request "
          f"p50 {np.percentile(seconds, 50):.1f} s, p95 {np.percentile(seconds, 95):.1f} s")
