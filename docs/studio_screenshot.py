"""Screenshot of the studio in headless Chromium: a filter applied to a photo and a training job's live chart.

    rotoscope serve --port 8765 &      # with a trained filter and a training job running
    python docs/studio_screenshot.py http://127.0.0.1:8765 starry-night photo.jpg docs/studio.png
"""

import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def main(url: str, filter_name: str, photo: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.locator(".card", has_text=filter_name).click()
        page.set_input_files("#apply-file", photo)
        page.wait_for_function("document.querySelector('#apply-result').naturalWidth > 0", timeout=120_000)
        # follow the newest running training job, if any, and let its chart fill in
        page.wait_for_selector("#jobs tbody tr", timeout=30_000)
        follow = page.locator("#jobs tbody tr", has=page.locator(".badge.running")).locator("button", has_text="follow")
        if follow.count():
            follow.first.click()
            page.wait_for_function("document.querySelector('#live-preview').naturalWidth > 0", timeout=120_000)
            time.sleep(5)
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
