"""The studio page in a real browser: headless Chromium loads it, applies a filter to an image, sees the result."""

import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def browser_or_skip():
    """Playwright driving Debian's chromium; skipped, with the reason, when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_playwright


@pytest.fixture
def live_server(tiny_filter):
    """The app on a loopback port, served by uvicorn in a thread."""
    import uvicorn

    from rotoscope.config import ServerConfig
    from rotoscope.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(port=port), run_jobs=False), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_studio_applies_a_filter_to_a_dropped_image(live_server, tiny_image):
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live_server + "/")
            # the gallery shows the filter's card, with its preview painted by the server
            card = page.locator(".card", has_text="tiny")
            card.wait_for(timeout=30_000)
            assert "Tiny test artwork" in card.inner_text()
            page.wait_for_function("document.querySelector('.card img').naturalWidth > 0", timeout=60_000)
            card.click()
            page.locator("#strength").fill("0.8")
            page.set_input_files("#apply-file", str(tiny_image))  # choosing a file paints it at once
            page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=60_000)
            size = page.evaluate("[document.querySelector('#apply-result').naturalWidth, "
                                 "document.querySelector('#apply-result').naturalHeight]")
            assert size == [48, 40]
            assert page.get_attribute("#apply-result", "data-filter") == "tiny"
            assert "with 'tiny'" in page.inner_text("#apply-status")
            assert page.locator("#error").is_hidden()
            assert errors == []
        finally:
            browser.close()
