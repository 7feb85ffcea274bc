"""The studio page in a real browser: headless Chromium lists the filters, paints a dropped image, and trains a
filter while its loss chart and preview fill in live.

CI installs Chromium (.ci/run); without it (or without playwright) these tests skip, saying why, except under CI
(CI=true), where they fail: the browser tests must not vanish from CI unnoticed.
ROTOSCOPE_CHROMIUM names another Chromium executable.
"""

import base64
import contextlib
import os
import shutil
import socket
import threading
import time

import pytest

from conftest import require, require_module

require_module("fastapi", 'pip install -e ".[test]"')

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
JOB_TIMEOUT_MS = 300_000  # a real training job on a shared machine: generous


def chromium_path() -> str | None:
    env = os.environ.get("ROTOSCOPE_CHROMIUM")
    if env:
        return shutil.which(env)
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@pytest.fixture
def browser():
    """Playwright driving the system's Chromium; skipped, with the reason, when either is missing."""
    require_module("playwright", "pip install playwright")
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    wanted = os.environ.get("ROTOSCOPE_CHROMIUM") or ", ".join(CHROMIUM_NAMES)
    require(exe, f"no Chromium ({wanted}) on PATH (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def preview_cache(tmp_path_factory):
    """One folder of gallery previews for the module's tests: each test's fresh home would otherwise repaint the
    shipped filters' previews (named by card hash, so sharing them is safe; ~20 s a test on a 2-core AVX2 CPU)."""
    return tmp_path_factory.mktemp("previews")


@contextlib.contextmanager
def serve(run_jobs: bool, previews=None):
    """The app on a loopback port, served by uvicorn in a thread."""
    import uvicorn

    from rotoscope.config import ServerConfig
    from rotoscope.server import create_app
    from rotoscope.server.jobs import server_dir

    if previews is not None:  # where the app keeps its previews (routes/filters.py) is that shared folder
        server_dir().mkdir(parents=True, exist_ok=True)
        os.symlink(previews, server_dir() / "previews")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(port=port), run_jobs=run_jobs), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture
def live_server(tiny_filter, preview_cache):
    """The studio with the tiny filter; jobs are recorded but never run."""
    with serve(run_jobs=False, previews=preview_cache) as url:
        yield url


@pytest.fixture
def live_server_with_workers(tiny_filter, preview_cache, monkeypatch):
    """The studio with the tiny filter and a scheduler that runs jobs in worker processes (one torch thread)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with serve(run_jobs=True, previews=preview_cache) as url:
        yield url


def open_studio(browser, url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    return page, errors


def natural_size(page, selector):
    return page.evaluate(f"[document.querySelector('{selector}').naturalWidth, "
                         f"document.querySelector('{selector}').naturalHeight]")


DROP = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type: "image/png" }));
  const ev = new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true });
  document.querySelector("#drop").dispatchEvent(ev);
}"""

# dark pixels inside the chart's plot area (left 48 px are axis labels, right 90 px the legend): only the 'total'
# loss line (#222) is that dark; the "waiting for the first step" text and the grid are grey
CHART_INK = """() => {
  const c = document.querySelector("#chart"), ctx = c.getContext("2d");
  const d = ctx.getImageData(48, 12, c.width - 48 - 90, c.height - 12 - 28).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && d[i] < 90 && d[i + 1] < 90 && d[i + 2] < 90) n++;
  return n;
}"""


IN_VIEW = """(sel) => {
  const r = document.querySelector(sel).getBoundingClientRect();
  return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0;
}"""


def test_studio_lists_filters_and_paints_a_dropped_image(live_server, tiny_image, browser):
    page, errors = open_studio(browser, live_server)
    # the gallery shows the filter's card, with its preview painted by the server
    card = page.locator(".card", has_text="tiny")
    card.wait_for(timeout=30_000)
    assert "Tiny test artwork" in card.inner_text() and "random" in card.inner_text()
    preview = card.locator("img")
    page.wait_for_function("(img) => img.naturalWidth > 0", arg=preview.element_handle(), timeout=60_000)
    assert preview.evaluate("(img) => img.naturalWidth") == 256  # the server's preview size
    assert "tiny" in page.eval_on_selector_all("#apply-filter option", "os => os.map(o => o.value)")
    page.wait_for_function("/ filters · /.test(document.querySelector('#health').textContent)", timeout=30_000)
    card.click()
    assert "selected" in card.get_attribute("class")
    page.locator("#strength").fill("0.8")
    assert page.inner_text("#strength-value") == "0.80"
    assert page.locator("#apply-pair").is_hidden()  # no empty frames before there is a photo
    # dropping a file on the drop zone shows it and paints it at once with the selected filter
    page.evaluate(DROP, ["dropped.png", base64.b64encode(tiny_image.read_bytes()).decode()])
    assert page.inner_text("#drop span") == "dropped.png"
    page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=60_000)
    assert page.locator("#apply-pair").is_visible()
    assert natural_size(page, "#apply-original") == [48, 40]
    assert natural_size(page, "#apply-result") == [48, 40]
    assert page.get_attribute("#apply-result", "data-filter") == "tiny"
    assert "48x40" in page.inner_text("#apply-status") and "with 'tiny'" in page.inner_text("#apply-status")
    assert page.get_attribute("#apply-download", "download") == "dropped-tiny.png"
    assert page.locator("#apply-download").is_visible()
    # the file input paints too, and the Paint button repaints with new settings
    page.set_input_files("#apply-file", str(tiny_image))
    page.wait_for_function("document.querySelector('#apply-status').textContent.includes('with')", timeout=60_000)
    page.fill("#apply-size", "24")
    page.click("#apply-btn")
    page.wait_for_function("document.querySelector('#apply-result').naturalWidth === 24", timeout=60_000)
    assert natural_size(page, "#apply-result") == [24, 20]
    assert page.locator("#apply-error").is_hidden() and page.locator("#error").is_hidden()
    # the painting made with other settings than the form's says so, dimmed, until Paint makes the new one
    page.locator("#strength").fill("0.5")
    assert "press Paint for the new settings" in page.inner_text("#result-caption")
    page.click("#apply-btn")
    page.wait_for_function("document.querySelector('#result-caption').textContent === 'painted'", timeout=60_000)
    # an unknown filter's error is said beside the Paint button, in view (it was at the top of the page)
    page.evaluate("document.querySelector('#apply-filter').add(new Option('nope'))")
    page.select_option("#apply-filter", "nope")
    page.click("#apply-btn")
    page.locator("#apply-error").wait_for(state="visible", timeout=30_000)
    assert "unknown filter 'nope'" in page.inner_text("#apply-error")
    assert page.evaluate(IN_VIEW, "#apply-error")
    assert errors == []


def test_studio_trains_a_filter_with_a_live_loss_chart_and_preview(live_server_with_workers, tiny_image, browser):
    page, errors = open_studio(browser, live_server_with_workers)
    page.locator(".card", has_text="tiny").wait_for(timeout=30_000)
    page.set_input_files("#train-art", str(tiny_image))
    page.fill("#train-form [name=name]", "learned")
    page.fill("#train-form [name=steps]", "6")
    page.fill("#train-form [name=size]", "32")
    page.select_option("#train-form [name=backbone]", "random")
    page.fill("#train-form [name=channels]", "8,16,16")
    assert page.locator("#train-live").is_hidden()
    page.get_by_text("No jobs yet").wait_for(timeout=30_000)
    page.click("#train-form button[type=submit]")
    # the page follows the new job over server-sent events until it is done
    page.locator("#train-live").wait_for(state="visible", timeout=30_000)
    page.wait_for_function("(want) => document.querySelector('#live-title').textContent === want",
                           arg="train 'learned'", timeout=30_000)
    page.wait_for_function("document.querySelector('#live-status').textContent === 'done'", timeout=JOB_TIMEOUT_MS)
    assert page.inner_text("#live-step") == "step 6 / 6"
    assert page.get_attribute("#live-status", "class") == "badge done"
    assert page.evaluate("document.querySelector('#live-progress').value") == 1
    assert page.locator("#live-cancel").is_hidden()
    # the chart got every step's loss terms exactly once, and drew them
    assert page.evaluate("state.history.map((h) => h.step)") == [1, 2, 3, 4, 5, 6]
    assert set(page.evaluate("Object.keys(state.history[5].train)")) >= {"content", "style", "total"}
    assert page.locator("#chart").is_visible()
    assert page.evaluate(CHART_INK) > 50
    # the preview of the network in training, from the job's preview link
    page.wait_for_function("document.querySelector('#live-preview').naturalWidth > 0", timeout=60_000)
    assert max(natural_size(page, "#live-preview")) == 256
    assert page.inner_text("#live-preview-caption").startswith("preview at step ")
    # the new filter joins the gallery and the filter menus; the jobs table shows the job done
    page.locator(".card", has_text="learned").wait_for(timeout=60_000)
    assert "learned" in page.eval_on_selector_all("#apply-filter option", "os => os.map(o => o.value)")
    row = page.locator("#jobs tbody tr", has_text="learned")
    row.wait_for(timeout=30_000)
    page.wait_for_function("[...document.querySelectorAll('#jobs tbody tr')].some((r) => "
                           "r.textContent.includes('learned') && r.querySelector('.badge.done'))", timeout=30_000)
    assert "6/6 (100%)" in row.first.inner_text()
    assert row.first.locator("a", has_text="download").count() == 1
    assert page.locator("#error").is_hidden()
    assert errors == []


PIXEL = """([sel, x, y]) => {
  const img = document.querySelector(sel), c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  return Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
}"""


def test_studio_keeps_a_region_drawn_on_the_photo_unpainted(live_server, tmp_path, browser):
    from conftest import make_scene

    photo = make_scene(tmp_path / "photo.png", size=(96, 64))
    page, errors = open_studio(browser, live_server)
    page.locator(".card", has_text="tiny").wait_for(timeout=30_000)
    page.evaluate(DROP, ["photo.png", base64.b64encode(photo.read_bytes()).decode()])
    page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=60_000)
    first = page.get_attribute("#apply-result", "src")

    def off(x: int) -> int:  # how far the result's pixel at (x, 32) is from the photo's, at most over the channels
        a, b = (page.evaluate(PIXEL, [sel, x, 32]) for sel in ("#apply-result", "#apply-original"))
        return max(abs(u - v) for u, v in zip(a, b))

    assert off(14) > 8
    # a stroke down the photo at x = 14 (of 96): that band is kept, and the result repaints on release
    page.locator("#keep-canvas").scroll_into_view_if_needed()
    box = page.locator("#keep-canvas").bounding_box()
    x = box["x"] + box["width"] * 14.5 / 96
    page.mouse.move(x, box["y"] + 1)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] - 1, steps=10)
    page.mouse.up()
    page.wait_for_function(f"document.querySelector('#apply-result').src !== '{first}' && "
                           "document.querySelector('#apply-result').naturalWidth > 0", timeout=60_000)
    page.wait_for_function("document.querySelector('#apply-status').textContent.includes('with')", timeout=60_000)
    # the stroke's middle is the photo again, to a level or two: the mask's edges are feathered (a Gaussian of 1% of
    # the longer side, ~1 px here) and the brush is 6 px wide, so ~0.3% of the painting is still blended in there
    assert off(14) <= 2
    assert off(70) > 8
    assert page.locator("#keep-clear").is_visible()
    # "keep faces" is sent as a setting (no face here: the far side stays painted)
    page.select_option("#keep", "faces")
    page.wait_for_function("document.querySelector('#apply-status').textContent.includes('with')", timeout=60_000)
    assert errors == []


def test_studio_starts_a_video_job_keeping_people_and_a_masked_region(live_server, tmp_path, browser):
    """The video form sends what a user chose to keep unpainted: people found on every frame, and a mask file."""
    import json
    import urllib.request

    from conftest import make_clip, make_image

    clip = make_clip(tmp_path / "clip.mp4", frames=6, audio=False)
    mask = make_image(tmp_path / "mask.png", size=(32, 24), mode="L")
    page, errors = open_studio(browser, live_server)
    page.locator("#video-filter option", has_text="tiny").wait_for(state="attached", timeout=30_000)
    page.set_input_files("#video-form input[name=video]", str(clip))
    page.select_option("#video-keep", "people")
    page.set_input_files("#video-mask", str(mask))
    page.click("#video-form button[type=submit]")
    # a job's row (its id in <code>), not the empty table's, whose "No jobs yet: training and video jobs show
    # here." says "video" too: waiting for that raced the job's creation
    page.locator("#jobs tbody tr:has(code)", has_text="video").wait_for(timeout=30_000)
    jobs = json.load(urllib.request.urlopen(live_server + "/api/jobs", timeout=30))
    jobs = jobs["jobs"] if isinstance(jobs, dict) else jobs
    (job,) = [j for j in jobs if j["kind"] == "video"]
    assert job["params"]["settings"]["keep"] == "people"
    assert job["params"]["mask"].startswith("mask")
    # the same form without a mask and with "nothing" sends neither field (an empty file input is not an upload)
    page.select_option("#video-keep", "")
    page.set_input_files("#video-mask", [])
    page.click("#video-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr code').length >= 2", timeout=30_000)
    jobs = json.load(urllib.request.urlopen(live_server + "/api/jobs", timeout=30))
    jobs = jobs["jobs"] if isinstance(jobs, dict) else jobs
    second = [j for j in jobs if j["kind"] == "video" and j["id"] != job["id"]]
    assert len(second) == 1 and "keep" not in second[0]["params"]["settings"] and "mask" not in second[0]["params"]
    assert errors == []


def test_an_older_painting_never_replaces_a_newer_one(live_server, tiny_image, browser):
    """A slow paint (a big photo) that answered after a newer one replaced it on screen, with the older settings'
    status and download name. Each paint now supersedes the one before it."""
    page, errors = open_studio(browser, live_server)
    page.locator(".card", has_text="tiny").wait_for(timeout=30_000)
    held = []
    page.route("**/api/filters/*/apply", lambda route: held.append(route) if not held else route.continue_())
    page.set_input_files("#apply-file", str(tiny_image))  # painted at once, at 48x40: held back here
    page.wait_for_function("document.querySelector('#apply-status').textContent.startsWith('painting')")
    assert len(held) == 1
    page.fill("#apply-size", "24")
    page.click("#apply-btn")  # the newer paint answers first
    page.wait_for_function("document.querySelector('#apply-result').naturalWidth === 24", timeout=60_000)
    try:
        held[0].continue_()  # the older one answers last (or was aborted already, as it should be)
    except Exception:  # noqa: BLE001 - Playwright refuses to continue a request the page aborted
        pass
    page.wait_for_timeout(1500)
    assert natural_size(page, "#apply-result") == [24, 20]
    assert page.inner_text("#apply-status").startswith("24x20 in ")
    assert errors == []


def test_the_studio_can_be_used_from_the_keyboard(live_server, tiny_image, browser):
    """The drop zone is a label around a hidden file input: Enter on it opened nothing; the filter cards could not
    be reached at all."""
    page, errors = open_studio(browser, live_server)
    card = page.locator(".card", has_text="tiny")
    card.wait_for(timeout=30_000)
    card.focus()
    page.keyboard.press("Enter")
    assert "selected" in card.get_attribute("class") and card.get_attribute("aria-pressed") == "true"
    assert page.eval_on_selector("#apply-filter", "s => s.value") == "tiny"
    # Enter on the drop zone opens the file chooser: the click on the file input that opens it is what is checked
    # (whether headless Chromium then shows its chooser varied from run to run)
    page.evaluate("document.querySelector('#apply-file').addEventListener('click', (ev) => { window.opened = true; "
                  "ev.preventDefault(); })")
    page.focus("#drop")
    page.keyboard.press("Enter")
    assert page.evaluate("window.opened === true")
    page.set_input_files("#apply-file", str(tiny_image))
    page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=60_000)
    # the name field's pattern is one the browser can use (an unescaped '-' made it invalid: no check at all)
    name = page.locator("#train-form [name=name]")
    name.fill("bad name!")
    assert page.evaluate("document.querySelector('#train-form [name=name]').validity.patternMismatch")
    name.fill("my-filter_2.1")
    assert page.evaluate("document.querySelector('#train-form [name=name]').validity.valid")
    assert errors == []


def test_on_a_phone_the_studio_fits_the_screen(live_server, tmp_path, browser):
    """On a 390 px phone a wide photo and its painting were drawn 560 px wide (the page scrolled sideways), the
    jobs table pushed its buttons off screen, and 28 filter cards came before "Paint an image"."""
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGB", (640, 300), (90, 140, 200)).save(wide)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server + "/")
    page.locator(".card", has_text="tiny").wait_for(timeout=30_000)
    page.set_input_files("#apply-file", str(wide))
    page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shown = page.locator("#apply-result").bounding_box()
    assert shown["width"] <= 390 and abs(shown["width"] / shown["height"] - 640 / 300) < 0.05  # not squashed
    # the gallery is one row that scrolls sideways, so "Paint an image" is near the top
    assert page.evaluate("document.querySelector('#apply-section').getBoundingClientRect().top + scrollY") < 1200
    context.close()
    assert errors == []
