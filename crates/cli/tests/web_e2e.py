"""End to end in a real browser: `waylay web` driven through Debian's Chromium by Playwright.

Run by tests/web_browser.rs with: the UI's URL (with its token), the proxy's address, the
Chromium binary and a folder for screenshots. Serves its own origin on 127.0.0.1, sends
traffic with curl through the proxy, and exits non-zero on the first failed check.
"""

import http.server
import json
import subprocess
import sys
import threading
import time

from playwright.sync_api import expect, sync_playwright

ui_url, proxy, chromium, artifacts = sys.argv[1:5]
base = ui_url.split("/?")[0]
seen = []
release_slow = threading.Event()


class Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
        if self.path == "/slow":
            release_slow.wait(20)
        body = json.dumps({"path": self.path, "ok": True}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
threading.Thread(target=server.serve_forever, daemon=True).start()
origin = f"127.0.0.1:{server.server_address[1]}"


def curl_args(path):
    return ["curl", "-sS", "--max-time", "20", "--noproxy", "", "-x", f"http://{proxy}", f"http://{origin}{path}"]


def curl(path):
    r = subprocess.run(curl_args(path), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.set_default_timeout(15000)
    expect.set_options(timeout=15000)

    # No token: the login page, nothing else.
    page.goto(base + "/")
    expect(page.locator("form#login")).to_be_visible()
    page.screenshot(path=f"{artifacts}/login.png")

    # The printed URL logs in (and drops the token from the address bar).
    page.goto(ui_url)
    expect(page.locator("#conn")).to_contain_text("live")
    assert "token=" not in page.url, page.url

    # Flows appear live while curl runs through the proxy.
    for i in range(5):
        assert '"ok": true' in curl(f"/live/{i}")
    expect(page.locator(".tr")).to_have_count(5)
    expect(page.locator(".tr").first).to_contain_text("/live/0")
    page.screenshot(path=f"{artifacts}/list.png")

    # A search filter narrows the list (evaluated by the server); a bad one says where.
    page.fill("#search", "~u /live/3")
    page.press("#search", "Enter")
    expect(page.locator(".tr")).to_have_count(1)
    expect(page.locator(".tr")).to_contain_text("/live/3")
    page.fill("#highlight", "~m GET ~zz")
    page.press("#highlight", "Enter")
    expect(page.locator(".filter-error")).to_contain_text("unknown operator ~zz")
    page.screenshot(path=f"{artifacts}/filter-error.png")
    page.fill("#highlight", "")
    page.press("#highlight", "Enter")
    page.fill("#search", "")
    page.press("#search", "Enter")
    expect(page.locator(".tr")).to_have_count(5)

    # Keyboard: j selects the first row, the detail shows its request.
    page.locator("body").click(position={"x": 5, "y": 700})
    page.keyboard.press("j")
    expect(page.locator(".tr.selected")).to_have_count(1)
    expect(page.locator(".detail .first-line")).to_contain_text("GET")
    page.keyboard.press("Escape")

    # Intercept, edit a header in the page, resume: the origin receives the edit.
    page.fill("#intercept", "~q ~u /hold")
    page.press("#intercept", "Enter")
    deadline = time.time() + 15
    while page.evaluate("fetch('/options').then(r => r.json()).then(o => o.intercept.value)") != "~q ~u /hold":
        assert time.time() < deadline, "the intercept filter was not set"
        time.sleep(0.05)
    held = subprocess.Popen(curl_args("/hold"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    row = page.locator(".tr.intercepted")
    expect(row).to_have_count(1)
    assert not any(h[":path"] == "/hold" for h in seen), "the origin saw the held request"
    row.click()
    page.click("#edit-request")
    headers = page.locator("#headers-request")
    headers.fill(headers.input_value() + "\nx-edited: from-browser")
    page.screenshot(path=f"{artifacts}/intercept-edit.png")
    page.click("#save-edit")
    expect(page.locator("#revert")).to_be_visible()
    page.click("#resume")
    out, err = held.communicate(timeout=30)
    assert held.returncode == 0 and '"ok": true' in out, (out, err)
    hold = [h for h in seen if h[":path"] == "/hold"]
    assert hold and hold[0].get("x-edited") == "from-browser", hold
    expect(page.locator(".tr.intercepted")).to_have_count(0)
    expect(page.locator(".tr")).to_have_count(6)
    page.locator(".tr", has_text="/live/2").click()
    page.locator(".tab", has_text="response").click()
    expect(page.locator("pre.body")).to_contain_text('"path": "/live/2"')

    # Replay (r): the request goes again through the proxy, a new flow marked replay.
    page.locator("body").click(position={"x": 5, "y": 700})
    page.keyboard.press("r")
    expect(page.locator(".tr")).to_have_count(7)
    expect(page.locator(".tr .badge.replay")).to_have_count(1)
    assert len([h for h in seen if h[":path"] == "/live/2"]) == 2, seen
    page.locator(".tr", has_text="/live/2").first.click()
    page.screenshot(path=f"{artifacts}/main.png")

    # Export as curl: the command, with the flow's URL, shown to copy.
    page.click("#export-curl")
    expect(page.locator("#export-text")).to_contain_text("curl ")
    expect(page.locator("#export-text")).to_contain_text(f"http://{origin}/live/2")
    page.screenshot(path=f"{artifacts}/export.png")

    # Save every flow as a flow file, open it again: the list holds them twice.
    with page.expect_download() as d:
        page.click("#save")
    saved = f"{artifacts}/saved.flows"
    d.value.save_as(saved)
    data = open(saved, "rb").read()
    assert data[:1].isdigit() and b":" in data[:12], data[:40]
    page.set_input_files("#open-file", saved)
    expect(page.locator(".tr")).to_have_count(14)
    with page.expect_download() as d:
        page.click("#save-har")
    d.value.save_as(f"{artifacts}/saved.har")
    har = json.load(open(f"{artifacts}/saved.har"))
    assert len(har["log"]["entries"]) == 14, len(har["log"]["entries"])

    # The options editor: a toggle is set in the proxy, a bad value shows the reason.
    page.locator("body").click(position={"x": 5, "y": 700})
    page.click("#options-button")
    page.fill("#options-filter", "anticache")
    page.locator("#opt-anticache input").check()
    deadline = time.time() + 15
    while not page.evaluate("fetch('/options').then(r => r.json()).then(o => o.anticache.value)"):
        assert time.time() < deadline, "anticache was not set"
        time.sleep(0.05)
    page.fill("#options-filter", "connect_timeout")
    # Under load the typed value was seen lost once in a while (an options event re-rendering
    # the row between the fill and the Enter; not pinned down yet): type again, bounded.
    alert = page.locator("#opt-connect_timeout [role=alert]")
    for attempt in range(5):
        page.fill("#opt-connect_timeout input", "")
        page.fill("#opt-connect_timeout input", "soon")
        page.press("#opt-connect_timeout input", "Enter")
        try:
            expect(alert).to_contain_text("soon", timeout=3000)
            break
        except AssertionError:
            assert attempt < 4, "the options editor never showed the refusal of connect_timeout=soon"
    page.screenshot(path=f"{artifacts}/options.png")
    page.click("#options button:has-text('Close')")

    # Kill a live flow that is not intercepted: the client gets no answer.
    page.fill("#intercept", "")
    page.press("#intercept", "Enter")
    slow = subprocess.Popen(curl_args("/slow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    row = page.locator(".tr", has_text="/slow")
    expect(row).to_have_count(1)
    row.click()
    page.click("#kill")
    release_slow.set()
    out, err = slow.communicate(timeout=30)
    assert slow.returncode != 0 and '"ok": true' not in out, (slow.returncode, out, err)
    expect(page.locator(".tr.has-error", has_text="/slow")).to_have_count(1)

    # A breakpoint rule made in the page: matching requests are edited with no resume; a
    # bad edit is refused with its position.
    page.locator("body").click(position={"x": 5, "y": 700})
    page.click("#rules-button")
    page.fill("#rule-filter", "~q & ~u /ruled")
    page.fill("#rule-edits", "header:X-Rule=from-rule")
    page.click("#rule-add")
    expect(page.locator("#rules .rule-text")).to_have_count(1)
    expect(page.locator("#rules .rule-text")).to_contain_text("header:X-Rule=from-rule")
    page.fill("#rule-edits", "status:200")
    page.click("#rule-add")
    expect(page.locator("#rule-error")).to_contain_text("response phase only")
    expect(page.locator("#rules .rule-text")).to_have_count(1)
    page.screenshot(path=f"{artifacts}/rules.png")
    page.click("#rules button:has-text('Close')")
    assert '"ok": true' in curl("/ruled")
    ruled = [h for h in seen if h[":path"] == "/ruled"]
    assert ruled and ruled[0].get("x-rule") == "from-rule", ruled
    expect(page.locator(".eventlog")).to_contain_text("breakpoint rule")
    page.locator(".tr", has_text="/ruled").click()
    expect(page.locator("#rule-note")).to_contain_text("header:X-Rule=from-rule")
    browser.close()

print("web e2e: all checks passed")
