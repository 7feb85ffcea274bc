"""Screenshot of the studio for the README (docs/studio.png), taken in headless Chromium via Playwright.

It paints PHOTO with FILTER in the studio at URL, starts a short training job from the studio's form (with --train)
and waits until its live loss chart and preview have filled in, shoots the whole page, then cancels that job (a
cancelled job saves no filter, so the registry is left as it was). Retake it from the repository root:

    rotoscope serve --port 8765 &        # the registry it serves must hold FILTER; Ctrl-C / kill it afterwards
    python docs/studio_screenshot.py http://127.0.0.1:8765 starry-night \\
        /work/shared/data/content/cafe_terrace.jpg docs/studio.png \\
        --train /work/shared/data/styles/hokusai_great_wave.jpg

Without --train it follows a training job already running on the server, if there is one. The PNG is reduced to
256 colours when it would be over --max-kb. Set ROTOSCOPE_CHROMIUM to use another Chromium than the one on PATH.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def chromium() -> str:
    names = [os.environ["ROTOSCOPE_CHROMIUM"]] if os.environ.get("ROTOSCOPE_CHROMIUM") else CHROMIUM_NAMES
    path = next((p for p in map(shutil.which, names) if p), None)
    if not path:
        sys.exit(f"no Chromium found ({', '.join(names)}): apt-get install -y chromium, or set ROTOSCOPE_CHROMIUM")
    return path


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def free_name(page, url: str, wanted: str) -> str:
    """`wanted`, or wanted-2, -3...: a filter name no filter or active job has yet."""
    taken = {f["name"] for f in page.request.get(url + "/api/filters").json()}
    taken |= {j["name"] for j in page.request.get(url + "/api/jobs").json() if j["status"] in ("queued", "running")}
    name, i = wanted, 1
    while name in taken:
        i += 1
        name = f"{wanted}-{i}"
    return name


def start_training(page, url: str, artwork: str, args) -> None:
    """Fill in and submit the studio's training form, as a person would."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(artwork).stem).strip("-._")[:40] or "artwork"
    name = args.train_name or free_name(page, url, stem.replace("_", "-"))
    page.set_input_files("#train-art", artwork)
    page.fill("#train-form [name=name]", name)
    page.fill("#train-form [name=steps]", str(args.train_steps))
    page.fill("#train-form [name=size]", str(args.train_size))
    page.click("#train-form button[type=submit]")
    page.locator("#train-live").wait_for(state="visible", timeout=30_000)
    log(f"training job for '{name}' started")


def save_png(png: bytes, out: str, max_kb: int) -> None:
    img = Image.open(io.BytesIO(png))
    if len(png) > max_kb * 1024:  # photos in a PNG are heavy: 256 colours, dithered, look the same at this scale
        buf = io.BytesIO()
        img.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG) \
            .save(buf, "PNG", optimize=True)
        png = buf.getvalue()
    Path(out).write_bytes(png)
    log(f"wrote {out}: {img.width}x{img.height}, {len(png) / 1024:.0f} KB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="the studio, e.g. http://127.0.0.1:8765")
    ap.add_argument("filter", help="the filter to paint the photo with (selected in the gallery)")
    ap.add_argument("photo", help="the photo to paint")
    ap.add_argument("out", help="the PNG to write, e.g. docs/studio.png")
    ap.add_argument("--train", metavar="ARTWORK", help="start a training job from this artwork and show its chart")
    ap.add_argument("--train-name", help="name of that filter (default: from the artwork's file name)")
    ap.add_argument("--train-steps", type=int, default=300, help="steps of that job (it is cancelled after the shot)")
    ap.add_argument("--train-size", type=int, default=128, help="crop size of that job")
    ap.add_argument("--chart-steps", type=int, default=20, help="wait for this many steps on the chart")
    ap.add_argument("--size", type=int, default=800, help="paint the photo at this longer side (px)")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--width", type=int, default=1280, help="viewport width (the shot is the whole page)")
    ap.add_argument("--max-kb", type=int, default=400, help="reduce the PNG to 256 colours above this size")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for painting and training")
    args = ap.parse_args(argv)
    url = args.url.rstrip("/")
    wait_ms = args.timeout * 1000

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        card = page.locator(f'.card[data-name="{args.filter}"]')
        try:
            card.wait_for(timeout=30_000)
        except Exception:
            names = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.name)")
            sys.exit(f"no filter '{args.filter}' in the studio's gallery (it has: {', '.join(names) or 'none'})")
        # the cards' previews first (28 filters' worth of painting on a fresh server), then the photo, then the
        # training job: the time the page shows for the paint is then the paint's, not theirs
        page.wait_for_function("[...document.querySelectorAll('.card img')].every((i) => i.naturalWidth > 0)",
                               timeout=wait_ms)
        # paint the photo with the filter, as a person would: pick the card, set the controls, choose the file
        card.click()
        page.locator("#strength").fill(str(args.strength))
        page.fill("#apply-size", str(args.size))
        page.set_input_files("#apply-file", args.photo)
        log(f"painting {args.photo} with '{args.filter}'")
        page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=wait_ms)
        following = False
        if args.train:
            start_training(page, url, args.train, args)
            following = True
        else:  # follow the newest running training job, if any
            page.wait_for_function("document.querySelector('#jobs tbody tr, #jobs tbody td')", timeout=30_000)
            row = page.locator("#jobs tbody tr", has=page.locator(".badge.running"), has_text="train")
            if row.count():
                row.first.locator("button", has_text="follow").click()
                following = True
        if following:
            log(f"waiting for {args.chart_steps} steps on the chart")
            page.wait_for_function(f"state.history.length >= {args.chart_steps} && "
                                   "document.querySelector('#live-preview').naturalWidth > 0 || "
                                   "['done', 'failed', 'cancelled'].includes(document.querySelector('#live-status')"
                                   ".textContent)", timeout=wait_ms)
            page.wait_for_timeout(1500)  # the next event: a fresh ETA and preview
        # every filter card's preview is painted, the jobs table is current
        page.wait_for_function("[...document.querySelectorAll('.card img')].every((i) => i.naturalWidth > 0)",
                               timeout=wait_ms)
        page.evaluate("Promise.all([loadJobs(), health()])")
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.mouse.move(0, 0)
        png = page.screenshot(full_page=True)
        if args.train and page.locator("#live-cancel").is_visible():
            page.click("#live-cancel")
            page.wait_for_function("['cancelled', 'done', 'failed'].includes("
                                   "document.querySelector('#live-status').textContent)", timeout=120_000)
            log("training job cancelled (no filter saved)")
        browser.close()
    if errors:
        log("page errors: " + "; ".join(errors))
    save_png(png, args.out, args.max_kb)


if __name__ == "__main__":
    main()
