"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's Chromium.

Diagnose (upload, prediction, three overlays, the PDF report downloaded), two bookmarked pages opened at once as the first
requests after a restart, and three Learn cases; screenshots go to artifacts/ (gitignored; CI keeps them as artifacts).
"""

import re
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, has_chromium

needs_chromium = pytest.mark.skipif(not has_chromium(), reason="Debian chromium not installed (.ci/run installs it)")


@contextmanager
def chromium():
    """Debian's Chromium driven by Playwright (never a downloaded browser); artifacts/ ready for screenshots."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def opened(browser, url: str, height: int = 1000):
    """A new tab, 1400 px wide, at `url`."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url)
    return page


def settled(page):
    """Wait until the page's script run has finished (Streamlit shows "Running..." meanwhile and keeps the previous
    run's widgets, stale, until then)."""
    from playwright.sync_api import expect

    page.wait_for_timeout(500)
    expect(page.get_by_text("Running...")).to_have_count(0, timeout=180_000)


@needs_chromium
def test_diagnose_in_a_real_browser(server):
    """A held-out melanoma: the model banner, the answer with its referral line, three maps and the PDF."""
    from playwright.sync_api import expect

    image = ROOT / "assets" / "gallery" / "ISIC_0024481.jpg"  # melanoma, HAM10000 test split
    with chromium() as browser:
        page = opened(browser, server, height=1800)
        expect(page.get_by_role("heading", name="Diagnose")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Answering model:")).to_be_visible(timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(image))
        expect(page.get_by_text("calibrated confidence").or_(page.get_by_text("no confident answer")).first
               ).to_be_visible(timeout=120_000)
        expect(page.get_by_text("alignancy risk").first).to_be_visible(timeout=60_000)  # "Refer: m..." or "M..."
        for method in ("Grad-CAM", "Score-CAM", "LIME"):
            expect(page.get_by_text(f"{method} ·")).to_be_visible(timeout=180_000)
        expect(page.get_by_text("Download PDF report")).to_be_visible(timeout=60_000)
        with page.expect_download(timeout=60_000) as download:  # the report is built on the click
            page.get_by_text("Download PDF report").click()
        report, report_name = Path(download.value.path()).read_bytes(), download.value.suggested_filename
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "diagnose.png"), full_page=True)
    assert "not a diagnostic device" in text
    assert "Traceback" not in text
    assert report.startswith(b"%PDF") and report_name.endswith(".pdf")


@needs_chromium
def test_bookmarked_pages_are_the_first_requests_after_a_restart(server):
    """A freshly started server whose first two visitors open /compare and /train at the same moment: both get the
    app's own navigation and frame (each run that started in Streamlit's legacy pages-folder mode reruns through
    app.py, not only the first), and a later visitor to a third bookmark too."""
    from playwright.sync_api import expect

    with chromium() as browser:
        visitors = {name: browser.new_page(viewport={"width": 1400, "height": 1000}) for name in ("compare", "train")}
        for name, page in visitors.items():  # both requests go out before either is answered
            page.goto(f"{server}/{name}", wait_until="commit")
        navs = []
        for heading, page in zip(("Compare models", "Train (admin)"), visitors.values()):
            expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=90_000)
            sidebar = page.locator("[data-testid=stSidebar]")
            expect(sidebar.get_by_text("not a diagnostic device")).to_be_visible(timeout=30_000)
            navs.append(page.locator("[data-testid=stSidebarNav]").inner_text())
        visitors["compare"].screenshot(path=str(ARTIFACTS / "deep_link_compare.png"))
        visitors["train"].screenshot(path=str(ARTIFACTS / "deep_link_train.png"))
        later = opened(browser, f"{server}/about")
        expect(later.get_by_role("heading", name="About").first).to_be_visible(timeout=60_000)
        navs.append(later.locator("[data-testid=stSidebarNav]").inner_text())
    for text in navs:
        assert "Diagnose" in text and "Compare models" in text and "Train (admin)" in text
        assert "common" not in text and "app" not in text.lower().split()


@needs_chromium
def test_learn_plays_three_cases(server):
    """A learner answers and reveals three cases, refreshing the browser after the second; the revealed state is
    saved as a screenshot."""
    from playwright.sync_api import expect

    with chromium() as browser:
        page = opened(browser, f"{server}/learn", height=2000)
        for n in (1, 2, 3):
            expect(page.get_by_text(f"Case {n} of")).to_be_visible(timeout=90_000)
            expect(page.get_by_text("Ground truth:")).to_have_count(0, timeout=60_000)  # nothing before Reveal
            settled(page)  # the previous case's widgets are gone
            page.get_by_text("Melanocytic nevi (nv)").first.click()
            settled(page)  # until the answer's run ends, its new Reveal button and the stale disabled one coexist
            page.get_by_role("button", name="Reveal").click()
            expect(page.get_by_text("Ground truth:")).to_be_visible(timeout=60_000)
            # "Teaching note —" is the note itself; plain "Teaching note" also matches the sources expander
            expect(page.get_by_text("Teaching note —")).to_be_visible(timeout=180_000)
            expect(page.get_by_text(f"Your score ({n} case")).to_be_visible(timeout=60_000)
            if n == 2:  # a refresh mid-quiz keeps the case, its reveal and the score (all in the address)
                expect(page).to_have_url(re.compile(r"answers=[0-9][bmx][0-9][bmx]&revealed=1"), timeout=30_000)
                page.reload()
                expect(page.get_by_text("Case 2 of")).to_be_visible(timeout=90_000)
                expect(page.get_by_text("Ground truth:")).to_be_visible(timeout=60_000)
                expect(page.get_by_text("Your score (2 case")).to_be_visible(timeout=60_000)
            if n == 3:
                expect(page.get_by_text("Download this session (CSV)")).to_be_visible(timeout=60_000)
                page.screenshot(path=str(ARTIFACTS / "learn_revealed.png"), full_page=True)
            else:
                page.get_by_role("button", name="Next case").click()
        text = page.inner_text("body")
    assert "Traceback" not in text and "HAM10000" in text


@needs_chromium
def test_learn_presenter_steps_by_keyboard(server):
    """Presenter mode: the image alone first, arrow keys step through the maps, the answer only at the last step."""
    from playwright.sync_api import expect

    with chromium() as browser:
        page = opened(browser, f"{server}/learn?presenter=1&case=1&step=Case", height=1000)
        expect(page.get_by_text("Case 1 of")).to_be_visible(timeout=90_000)
        expect(page.get_by_role("button", name="Next ▶")).to_be_visible(timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')]"
                               ".some(i => i.complete && i.naturalWidth > 0)", timeout=60_000)  # the case's image
        page.screenshot(path=str(ARTIFACTS / "learn_presenter_case.png"))
        assert "Teaching note —" not in page.inner_text("body")
        for _ in range(4):  # Case -> Grad-CAM -> Score-CAM -> LIME -> Answer
            page.keyboard.press("ArrowRight")
            settled(page)
        expect(page.get_by_text("Teaching note —")).to_be_visible(timeout=180_000)
        assert "step=answer" in page.url.lower(), page.url
        page.screenshot(path=str(ARTIFACTS / "learn_presenter_answer.png"))
        assert "Traceback" not in page.inner_text("body")


@needs_chromium
def test_compare_evaluates_the_shipped_sample(server):
    """Compare models, "Your images": the shipped external sample evaluated by the three models, as a researcher
    would try it first."""
    from playwright.sync_api import expect

    with chromium() as browser:
        page = opened(browser, f"{server}/compare", height=2400)
        expect(page.get_by_role("heading", name="Compare models")).to_be_visible(timeout=90_000)
        page.get_by_text("try it: the shipped sample").click()
        page.get_by_role("button", name="Check and evaluate").click()
        expect(page.get_by_text("images evaluated:")).to_be_visible(timeout=300_000)
        expect(page.get_by_text("Download per-image predictions (CSV)")).to_be_visible(timeout=60_000)
        page.get_by_text("Download per-image predictions (CSV)").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "compare_your_images.png"), full_page=True)
        text = page.inner_text("body")
    assert "21 images evaluated" in text and "Traceback" not in text


@needs_chromium
def test_admin_stays_logged_in_across_a_refresh_until_logging_out(server):
    """Train (admin): a refresh keeps the administrator logged in (signed cookie); after Log out a refresh asks for
    the password again."""
    from playwright.sync_api import expect

    with chromium() as browser:
        page = opened(browser, f"{server}/train", height=1200)
        page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible(timeout=60_000)
        settled(page)
        page.reload()
        expect(page.get_by_role("button", name="Log out")).to_be_visible(timeout=60_000)
        expect(page.get_by_label("Admin password")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "train_after_refresh.png"))
        other = browser.new_context().new_page()  # another browser profile: no cookie, no access
        other.goto(f"{server}/train")
        expect(other.get_by_label("Admin password")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_label("Admin password")).to_be_visible(timeout=60_000)
        settled(page)
        page.reload()
        expect(page.get_by_label("Admin password")).to_be_visible(timeout=60_000)
        assert "Traceback" not in page.inner_text("body")
