"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's Chromium.

Uploads an image on Diagnose, waits for the prediction and the three overlays, checks the page text
and saves a screenshot under artifacts/ (gitignored; CI keeps it as an artifact).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
SHIPPED = ROOT / "weights" / "manifest.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tiny_weights):
    port = free_port()
    env = {**os.environ, "DERMADISTILL_WEIGHTS": str(ROOT / "weights" if SHIPPED.is_file() else tiny_weights)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield url
    proc.terminate()
    try:
        log = proc.communicate(timeout=20)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        log = proc.communicate()[0].decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium not installed (.ci/run installs it)")
def test_diagnose_in_a_real_browser(server):
    from playwright.sync_api import expect, sync_playwright

    image = ROOT / "assets" / "gallery" / sorted(p.name for p in (ROOT / "assets" / "gallery").glob("*.jpg"))[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
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
