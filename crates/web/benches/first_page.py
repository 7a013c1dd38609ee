"""Time from opening the web UI's URL (with its token) to the first rendered flow rows, in
Debian's Chromium driven by Playwright. Prints one line per run: milliseconds, rows shown.
Run by benches/web_scale.rs with: the URL, the Chromium binary, the number of runs."""

import sys
import time

from playwright.sync_api import sync_playwright

url, chromium, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
    for _ in range(runs):
        # A fresh context each time: no cache, no cookie (the token URL logs in).
        ctx = browser.new_context(viewport={"width": 1280, "height": 720})
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(".tr", timeout=60000)
        ms = (time.perf_counter() - t0) * 1000
        shown = page.locator("#conn").inner_text()
        print(f"{ms:.0f} {shown}")
        ctx.close()
    browser.close()
