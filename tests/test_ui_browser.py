"""`noisynn ui` in a real browser: headless Debian Chromium driven by Playwright, the embedded model.

Starts the app on a free loopback port in a subprocess that logs every non-loopback socket
connect or DNS lookup, moves the sigma slider with the mouse, presses Generate, and checks that
the noisy text and the probability chart changed while the clean text did not; bad input shows
a message and the server keeps serving; the page fetched nothing but the app's own files. Saves
the README screenshot images/ui.png. Every wait is on a concrete DOM condition.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT
from noisynn.explore import sigma_from_slider

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, without network: no sandbox, no GPU, no background calls to Google.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 120_000
SCREENSHOT = ROOT / "images" / "ui.png"

# Runs the app with an audit hook that records any connection or name lookup off the loopback.
LAUNCHER = r"""
import sys
log = open(sys.argv[1], "a", buffering=1)
LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
def hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and not str(args[1][0]).startswith(LOCAL):
        log.write(f"connect {args[1]}\n")
    elif event == "socket.getaddrinfo" and args[0] and not str(args[0]).startswith(LOCAL):
        log.write(f"getaddrinfo {args[0]!r}\n")
sys.addaudithook(hook)
from noisynn.cli import main
sys.exit(main(["ui"] + sys.argv[2:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
        pytest.skip("Debian chromium not installed (make test installs it)")
    pytest.importorskip("playwright")
    pytest.importorskip("gradio")
    tmp = tmp_path_factory.mktemp("ui")
    port = free_port()
    outbound, server_log = tmp / "outbound.log", tmp / "server.log"
    outbound.touch()
    # One torch thread: beside Chromium (and on a shared 2-core machine) spinning OpenMP threads made
    # each step up to 10x slower; one thread keeps the test's time steady.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": "1"}
    with open(server_log, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(outbound), "--port", str(port), "--sigma", "0.001",
                                 "--max_new_tokens", "20", "--eval_tokens", "256"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the ui exited with {proc.returncode}:\n{server_log.read_text()[-3000:]}")
            try:
                if opener.open(url, timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the ui did not answer within 240 s:\n{server_log.read_text()[-3000:]}")
            time.sleep(0.5)  # polling interval only, not an assertion
        yield url, outbound, server_log
        assert proc.poll() is None, f"the server died:\n{server_log.read_text()[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def status_contains(page, text: str) -> None:
    start = time.monotonic()
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text,
                           timeout=WAIT_MS)
    print(f"{time.monotonic() - start:6.1f} s until status shows {text!r}")


def set_slider(page, selector: str, value: float, exact: bool = True, lo: float = -4.0, hi: float = 0.0) -> float:
    """Click the slider's track near ``value`` (a release, as a user's), then step with the arrow keys onto it."""
    track = page.locator(f"{selector} input[type=range]")
    box = track.bounding_box()
    track.click(position={"x": box["width"] * (value - lo) / (hi - lo), "y": box["height"] / 2})
    for _ in range(20 if exact else 0):
        current = float(track.input_value())
        if abs(current - value) < 1e-9:
            break
        track.press("ArrowRight" if current < value else "ArrowLeft")
    return float(track.input_value())


def chart_src(page, elem_id: str) -> str:
    page.wait_for_selector(f"#{elem_id} img", timeout=WAIT_MS)
    return page.get_attribute(f"#{elem_id} img", "src")


def texts(page):
    return page.input_value("#clean-text textarea"), page.input_value("#noisy-text textarea")


def save_screenshot(page, tmp_path) -> None:
    """The README's images/ui.png; rewritten only when the page looks different, so reruns leave git clean.

    (Chromium's antialiasing differs by a few pixels from run to run, so bytes never match.)
    """
    from PIL import Image, ImageChops

    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    if SCREENSHOT.is_file():
        old, new = Image.open(SCREENSHOT).convert("L"), Image.open(shot).convert("L")
        if old.size == new.size:
            changed = sum(ImageChops.difference(old, new).point(lambda v: 255 if v > 40 else 0).histogram()[255:])
            if changed <= 50:  # antialiasing only (a changed digit alone moves hundreds of pixels)
                return
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)


def test_ui_in_chromium(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, outbound, server_log = app_url
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.wait_for_selector("#generate", timeout=WAIT_MS)
            page.locator("#live input").uncheck()

            # Baseline at sigma = 0.001.
            page.click("#generate")
            status_contains(page, "Done: sigma = 0.001,")
            clean_1, noisy_1 = texts(page)
            chart_1 = chart_src(page, "prob-chart")
            assert clean_1.strip() and noisy_1.strip()

            # Move the slider to log10 sigma = -1.5 and generate again.
            assert set_slider(page, "#sigma-slider", -1.5) == pytest.approx(-1.5)
            sigma = sigma_from_slider(-1.5)
            page.wait_for_function("t => document.querySelector('#sigma-value').innerText.includes(t)",
                                   arg=f"{sigma:g}", timeout=WAIT_MS)
            page.click("#generate")
            status_contains(page, f"Done: sigma = {sigma:g},")
            clean_2, noisy_2 = texts(page)
            chart_2 = chart_src(page, "prob-chart")
            assert clean_2 == clean_1, "the clean continuation must not depend on sigma"
            assert noisy_2 != noisy_1, "the noisy continuation should change from sigma 0.001 to 0.0316"
            assert chart_2 != chart_1, "the probability chart should change with sigma"
            assert f"--max_noise {sigma!r}" in page.input_value("#cli-command textarea")
            assert page.get_attribute("#metrics [role=grid]", "aria-rowcount") == "3"  # header, clean, noisy
            assert page.locator("#csv-file a").count() >= 1
            save_screenshot(page, tmp_path)

            # Bad input: a visible message, the outputs stay, no traceback.
            page.fill("#prompt textarea", "   ")
            page.click("#generate")
            status_contains(page, "the prompt is empty")
            page.locator("[data-testid=toast-text]", has_text="the prompt is empty").first.wait_for(timeout=WAIT_MS)
            page.fill("#prompt textarea", "The history of science shows that")
            max_new = page.input_value("#max-new-tokens input")
            page.fill("#max-new-tokens input", "100000")
            page.click("#generate")
            status_contains(page, "max new tokens must be between 1 and 256")
            assert texts(page) == (clean_2, noisy_2)
            page.fill("#max-new-tokens input", max_new)

            # Drift: sigma grows token by token.
            page.get_by_role("tab", name="Drift").click()
            page.locator("#drift-tokens input").fill("12")
            page.click("#drift-play")
            status_contains(page, "Drift done: 12 tokens")
            assert page.input_value("#drift-text textarea").strip()
            chart_src(page, "drift-chart")

            # Saved runs: a missing folder is a message; the committed sweep is shown (its figure redrawn).
            page.get_by_role("tab", name="Saved runs").click()
            page.locator("#run-folder input").fill("/no/such/run")
            page.click("#run-show")
            status_contains(page, "run folder /no/such/run does not exist")
            page.locator("#run-folder input").fill("results/sweep")
            page.click("#run-show")
            status_contains(page, "Showing results/sweep")
            page.wait_for_selector("#run-figures img", timeout=WAIT_MS)
            assert int(page.get_attribute("#run-table [role=grid]", "aria-rowcount")) > 10

            # Live mode, and the server still serves after the errors: releasing the slider regenerates.
            page.get_by_role("tab", name="Explore").click()
            page.locator("#live input").check()
            released = set_slider(page, "#sigma-slider", -1.0, exact=False)
            assert released != pytest.approx(-1.5)
            status_contains(page, f"Done: sigma = {sigma_from_slider(released):g},")
            assert texts(page)[0] == clean_2 and texts(page)[1] != noisy_2
        finally:
            browser.close()
    assert "Traceback" not in server_log.read_text(), server_log.read_text()[-3000:]
    foreign = [u for u in requests if not u.startswith((url, "data:", "blob:"))]
    assert not foreign, f"the page fetched from outside the app: {foreign[:5]}"
    assert outbound.read_text() == "", f"the server reached off the loopback:\n{outbound.read_text()[:2000]}"
