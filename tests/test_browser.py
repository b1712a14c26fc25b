"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's Chromium.

Uploads an image on Diagnose, waits for the prediction and the three overlays, checks the page text
and saves a screenshot under artifacts/ (gitignored; CI keeps it as an artifact).
"""

import pytest

from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, has_chromium


@pytest.mark.skipif(not has_chromium(), reason="Debian chromium not installed (.ci/run installs it)")
def test_diagnose_in_a_real_browser(server):
    from playwright.sync_api import expect, sync_playwright

    image = ROOT / "assets" / "gallery" / sorted(p.name for p in (ROOT / "assets" / "gallery").glob("*.jpg"))[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(server)
        expect(page.get_by_role("heading", name="Diagnose")).to_be_visible(timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(image))
        expect(page.get_by_text("calibrated confidence").or_(page.get_by_text("no confident answer")).first
               ).to_be_visible(timeout=120_000)
        for method in ("Grad-CAM", "Score-CAM", "LIME"):
            expect(page.get_by_text(f"{method} ·")).to_be_visible(timeout=180_000)
        expect(page.get_by_text("Download PDF report")).to_be_visible(timeout=60_000)
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "diagnose.png"), full_page=True)
        browser.close()
    assert "not a diagnostic device" in text
    assert "Traceback" not in text
