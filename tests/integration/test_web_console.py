"""The web console in a real browser: Debian's chromium driven by Playwright, against a
pyvzd started on a temporary root and a free 127.0.0.1 port, logged in with a token made
by `pyvzd token add`. The page's CSP (script-src 'self') refuses string evaluation, so
waits poll with page.evaluate (which the policy does not see) rather than
wait_for_function."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--ignore-certificate-errors",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO / "tests" / "artifacts"


@dataclass
class Daemon:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's own self-signed certificate
    return context


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, context=_insecure(), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.fixture
def daemon(vzroot: VzRoot, tmp_path: Path) -> Iterator[Daemon]:
    made = vzroot.run("pyvzd", "token", "add", "browser", "--role", "admin")
    assert made.code == 0, made.err
    token = made.out.strip()
    port = _free_port()
    log = tmp_path / "pyvzd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pyvz.cli.pyvzd", "serve", "--no-socket", "--listen", f"127.0.0.1:{port}"],
            env=vzroot.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"pyvzd ended: {log.read_text()}"
            with contextlib.suppress(OSError):
                if _status(f"{url}/ui/session") == 401:
                    break
            assert time.monotonic() < deadline, f"pyvzd did not answer: {log.read_text()}"
            time.sleep(0.1)
        yield Daemon(url, token, process, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make install)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = Path(tempfile.mkdtemp(prefix="pyvz-chromium-", dir=tmp_path))
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


def wait_js(page: Any, expression: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.1)


def log_in(page: Any, daemon: Daemon, errors: list[str]) -> None:
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(daemon.url + "/")
    page.fill("#token", daemon.token)
    page.click("#login")
    page.wait_for_selector("table.cts")


TERMINAL_TEXT = """() => {
  const buffer = window.pyvzConsole.terminal.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines.join("\\n");
}"""


def ct_status(vzroot: VzRoot, ctid: str) -> str:
    return vzroot.ok("status", ctid).strip()


def test_console_creates_starts_types_snapshots_stops_and_destroys(
    vzroot: VzRoot, daemon: Daemon, browser: Any
) -> None:
    started = time.monotonic()
    page = browser.new_page()
    errors: list[str] = []
    log_in(page, daemon, errors)

    page.click("#nav a[data-view=create]")
    page.wait_for_selector("#create-ctid")
    page.fill("#create-ctid", "101")
    page.fill("#create-hostname", "webtest101")
    assert page.eval_on_selector("#create select[name=ostemplate]", "s => s.value") == "busybox"
    page.click("#create button[type=submit]")
    wait_js(page, "location.hash === '#/ct/101'", 60)
    assert ct_status(vzroot, "101") == "CTID 101 exist mounted running"
    page.wait_for_selector(".titlebar .status.running")

    page.click("#terminal-connect")
    wait_js(page, "document.querySelector('#terminal-state').textContent === 'connected'")
    page.click("#terminal")
    time.sleep(0.5)  # the shell's first prompt
    page.keyboard.type("hostname\n")
    seen = f"(() => {{ const t = ({TERMINAL_TEXT})(); return /^webtest101$/m.test(t) && t; }})()"
    text = wait_js(page, seen)
    assert "root@webtest101" in text  # the prompt, and the command's own output line above

    page.fill("#snapshot-name", "before-change")
    page.click("#snapshot-take button[type=submit]")
    page.wait_for_selector("table.snapshots td.snapshot-name:has-text('before-change')")
    listed = vzroot.ok("snapshot-list", "101")
    assert "before-change" in listed

    page.click("#backup-run button[type=submit]")
    archive = page.wait_for_selector("table.backups td.mono:has-text('vzdump-')", timeout=60_000)
    assert (archive.text_content() or "").startswith("vzdump-")

    page.goto(daemon.url + "/#/")
    row = page.wait_for_selector("table.cts tr[data-ctid='101']")
    assert "webtest101" in row.inner_text()
    wait_js(page, "document.querySelector('tr[data-ctid=\"101\"] .status').textContent === 'running'")
    time.sleep(3.5)  # a second sample, so the memory chart has a line
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web-console-list.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the list page: {shot}")
    assert shot.stat().st_size > 1000

    page.click("tr[data-ctid='101'] a.button")
    page.click("#ct-stop")
    page.wait_for_selector("#ct-start")
    assert ct_status(vzroot, "101") == "CTID 101 exist unmounted down"

    snapshot = "table.snapshots tr:has(td.snapshot-name:has-text('before-change'))"
    page.click(f"{snapshot} button:has-text('Switch')")
    page.click("#confirm-ok")
    page.wait_for_selector(".notice:has-text('Switch to before-change: done')")
    page.click(f"{snapshot} button:has-text('Delete')")
    page.click("#confirm-ok")
    page.wait_for_selector("table.snapshots td:has-text('No snapshots.')")
    assert "before-change" not in vzroot.ok("snapshot-list", "101")

    page.click("#ct-destroy")
    assert "Destroy CT 101" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    wait_js(page, "location.hash === '#/'", 60)
    page.wait_for_selector("table.cts td:has-text('No containers yet.')")
    assert not (vzroot.conf_dir / "101.conf").exists()
    assert errors == []
    assert time.monotonic() - started < 60


def test_markup_from_a_ct_is_shown_as_text(vzroot: VzRoot, daemon: Daemon, browser: Any) -> None:
    vzroot.ok("create", "102", "--ostemplate", "busybox", "--hostname", "plain")
    description = "<script>window.pwned=1</script>"
    vzroot.ok("set", "102", "--description", description, "--save")
    # vzctl refuses such a host name; a hand-edited config (or one from another host) has it.
    conf = vzroot.conf_dir / "102.conf"
    conf.write_text(re.sub(r"^HOSTNAME=.*$", 'HOSTNAME="<b>x</b>"', conf.read_text(), flags=re.M))
    page = browser.new_page()
    errors: list[str] = []
    log_in(page, daemon, errors)

    cell = page.wait_for_selector("tr[data-ctid='102'] td.hostname")
    assert cell.text_content() == "<b>x</b>"
    assert page.eval_on_selector("tr[data-ctid='102'] td.hostname", "td => td.querySelector('b')") is None
    assert page.text_content("tr[data-ctid='102'] td.description") == description
    page.goto(daemon.url + "/#/ct/102")
    page.wait_for_selector("dd.description")
    assert page.text_content("dd.hostname") == "<b>x</b>"
    assert page.text_content("dd.description") == description
    assert page.evaluate("document.querySelectorAll('main script, main b').length") == 0
    scripts = page.evaluate("[...document.scripts].map(s => s.src)")
    assert scripts == [daemon.url + "/static/app.js"]
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert errors == []


class _Attacker(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        page = (
            f'<form id="f" method="POST" action="{self.target}" enctype="text/plain">'
            '<input name="x" value="y"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *_args: Any) -> None:
        pass


def test_changes_without_the_csrf_token_are_refused(vzroot: VzRoot, daemon: Daemon, browser: Any) -> None:
    vzroot.ok("create", "103", "--ostemplate", "busybox", "--hostname", "keep")
    vzroot.ok("start", "103")
    page = browser.new_page()
    errors: list[str] = []
    log_in(page, daemon, errors)
    page.wait_for_selector("tr[data-ctid='103']")

    # Another site's page posts a form to the daemon, in the browser that is logged in.
    class Attacker(_Attacker):
        target = f"{daemon.url}/api/v1/cts/103/stop"

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        evil = browser.new_page()
        with evil.expect_response(lambda r: r.url.endswith("/api/v1/cts/103/stop")) as answer:
            evil.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        # SameSite=Strict keeps the cookie from a cross-site post (401); were it sent, the
        # missing CSRF token would refuse it (403).
        assert answer.value.status in (401, 403)
        evil.close()
    finally:
        server.shutdown()
        server.server_close()

    # With the session cookie, from the console's own origin, but without X-CSRF-Token.
    stop = page.evaluate(
        """async () => (await fetch('/api/v1/cts/103/stop', {method: 'POST', body: '{}',
             headers: {'Content-Type': 'application/json'}})).status"""
    )
    assert stop == 403
    patch = page.evaluate(
        """async () => { const r = await fetch('/api/v1/cts/103', {method: 'PATCH',
             headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'wrong'},
             body: JSON.stringify({params: {hostname: 'hacked'}, save: true})});
           return [r.status, (await r.json()).error.message]; }"""
    )
    assert patch[0] == 403 and "CSRF" in patch[1]
    with page.expect_response(lambda r: r.url.endswith("/api/v1/cts/103/stop")) as posted:
        page.evaluate(
            """() => { const f = document.createElement('form'); f.method = 'POST';
                 f.action = '/api/v1/cts/103/stop'; document.body.append(f); f.submit(); }"""
        )
    assert posted.value.status == 403
    page.wait_for_load_state()
    assert json.loads(page.text_content("body") or "{}")["error"]["status"] == 403

    assert ct_status(vzroot, "103") == "CTID 103 exist mounted running"
    conf = (vzroot.conf_dir / "103.conf").read_text()
    assert 'HOSTNAME="keep"' in conf and "hacked" not in conf

    # The same change with the session's token goes through: the refusals were the token's.
    page.goto(daemon.url + "/")
    page.wait_for_selector("tr[data-ctid='103']")
    done = page.evaluate(
        """async () => { const s = await (await fetch('/ui/session')).json();
             const r = await fetch('/api/v1/cts/103?wait=30', {method: 'PATCH',
               headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
               body: JSON.stringify({params: {description: 'allowed'}, save: true})});
             return (await r.json()).status; }"""
    )
    assert done == "success"
    assert 'DESCRIPTION="allowed"' in (vzroot.conf_dir / "103.conf").read_text()
    assert errors == []


def test_a_failcnt_rise_is_marked_until_looked_at(vzroot: VzRoot, daemon: Daemon, browser: Any) -> None:
    vzroot.ok("create", "104", "--ostemplate", "busybox")
    vzroot.ok("set", "104", "--numproc", "6:6", "--save")
    vzroot.ok("start", "104")
    page = browser.new_page()
    errors: list[str] = []
    log_in(page, daemon, errors)
    row = "tr[data-ctid='104']"
    page.wait_for_selector(row)
    wait_js(page, "localStorage.getItem('pyvz.failcnt.104') !== null")  # first sight: the baseline
    assert page.query_selector(f"{row} .fail-mark") is None

    forked = vzroot.vzctl("exec", "104", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait")
    assert "can't fork" in forked.err + forked.out
    mark = page.wait_for_selector(f"{row} .fail-mark", timeout=15_000)
    assert re.search(r"numproc failcnt 0 → [1-9]", mark.get_attribute("title") or "")

    page.click(f"{row} a.button")  # the CT's page shows its beancounters: that is looking
    page.wait_for_selector("table.ubc tr.rose td.failcnt")
    page.click("#nav a[data-view=list]")
    page.wait_for_selector(row)
    time.sleep(3.5)  # the next sample
    assert page.query_selector(f"{row} .fail-mark") is None
    page.reload()
    page.wait_for_selector(row)
    time.sleep(1)
    assert page.query_selector(f"{row} .fail-mark") is None  # remembered across page loads
    assert errors == []
