"""A real browser for tests: headless Chromium driven over the Chrome DevTools Protocol on
`--remote-debugging-pipe` (file descriptors 3 and 4, NUL-terminated JSON), standard library only. No driver, no
websocket, no port, nothing downloaded: the system's `chromium` (Debian package; `.ci/run` installs it).

    from tests import browser
    page = browser.render(Path("report.html"), Path("report.png"))
    page.charts   # every svg.chart: its data-* attributes and laid-out width/height (getBoundingClientRect)
    page.metrics  # every [data-metric] element: its data-* attributes and its text as shown
    page.requests # every URL the page requested (a self-contained page: only its own file:// URL)

The layout comes from the browser (Runtime.evaluate in the loaded page), not from parsing the HTML here."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMEOUT_S = 60.0  # one render, start to close; a cold start here takes about a second
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
    "--disable-component-update", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--allow-file-access-from-files",
)
# Runs in the loaded page (the page itself has no script): what the tests read from the layout.
COLLECT = """(() => {
  const data = (el) => Object.fromEntries(Object.entries(el.dataset));
  const charts = [...document.querySelectorAll('svg.chart')].map((el) => {
    const r = el.getBoundingClientRect();
    return {attrs: data(el), width: r.width, height: r.height};
  });
  const metrics = [...document.querySelectorAll('[data-metric]')].map((el) => ({
    attrs: data(el), text: (el.innerText ?? el.textContent).trim()}));
  return {charts, metrics, title: document.title, text: document.body.innerText};
})()"""


@dataclass(frozen=True)
class Chart:
    attrs: dict[str, str]  # the element's data-* attributes, as `dataset` names them (data-chart -> "chart")
    width: float
    height: float


@dataclass(frozen=True)
class Metric:
    attrs: dict[str, str]  # data-metric -> "metric", data-partition -> "partition", ...
    text: str  # innerText (SVG text: textContent), stripped


@dataclass(frozen=True)
class Page:
    title: str
    text: str  # the body's innerText: what a reader sees
    charts: list[Chart]
    metrics: list[Metric]
    requests: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the render, browser start to close


class BrowserError(RuntimeError):
    pass


def chromium_path() -> str | None:
    """$CHROMIUM when set (None when it names no executable: a wrong setting is not papered over), else
    /usr/bin/chromium, else chromium or chromium-browser on PATH; None when none is there."""
    env = os.environ.get("CHROMIUM")
    if env:
        found = shutil.which(env)
        return found if found and os.access(found, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(html_path: Path, png_path: Path, width: int = 1200) -> Page:
    """Open `html_path` in headless Chromium at `width` CSS pixels, save a full-page PNG screenshot to
    `png_path`, and return what the laid-out page shows (see Page)."""
    binary = chromium_path()
    if binary is None:
        raise BrowserError("no Chromium found: set CHROMIUM, or install it (Debian: apt-get install chromium)")
    started = time.monotonic()
    profile = tempfile.TemporaryDirectory(prefix="chromium-test-", ignore_cleanup_errors=True)
    with profile, _Browser(binary, Path(profile.name)) as b:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            b.call(method, session=session)
        b.call("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session=session)
        b.events.clear()
        nav = b.call("Page.navigate", {"url": html_path.resolve().as_uri()}, session=session)
        if nav.get("errorText"):
            raise BrowserError(f"could not open {html_path}: {nav['errorText']}")
        b.wait_event("Page.loadEventFired", session)
        collected = b.call("Runtime.evaluate", {"expression": COLLECT, "returnByValue": True}, session=session)
        if "exceptionDetails" in collected:
            raise BrowserError(f"collecting the page failed: {collected['exceptionDetails']}")
        value = collected["result"]["value"]
        size = b.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = b.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": max(size["width"], width), "height": size["height"], "scale": 1},
        }, session=session)
        png_path.write_bytes(base64.b64decode(shot["data"]))
        requests = [e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"]
    return Page(title=value["title"], text=value["text"],
                charts=[Chart(c["attrs"], float(c["width"]), float(c["height"])) for c in value["charts"]],
                metrics=[Metric(m["attrs"], m["text"]) for m in value["metrics"]],
                requests=requests, seconds=time.monotonic() - started)


class _Browser:
    """One Chromium process and its DevTools pipe: requests by id, events kept in order in `events`."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        self._deadline = time.monotonic() + TIMEOUT_S
        self._log = profile / "chromium.log"

    def __enter__(self) -> _Browser:
        to_child_r, self._to_child = os.pipe()  # the browser reads commands on its fd 3
        self._from_child, from_child_w = os.pipe()  # and writes answers on its fd 4

        def child_fds() -> None:  # in the child, before exec: the two pipe ends at 3 and 4 (inheritable)
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=False, preexec_fn=child_fds,
                start_new_session=True,
            )
        os.close(to_child_r)
        os.close(from_child_w)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc.poll() is None:
                self._send({"id": self._id(), "method": "Browser.close"})
                self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            os.close(self._to_child)
            os.close(self._from_child)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile go to `events`."""
        message: dict[str, Any] = {"id": self._id(), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        while True:
            reply = self._read()
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            return e.get("method") == method and (session is None or e.get("sessionId") == session)

        while True:
            seen = next((e for e in self.events if match(e)), None)
            if seen is not None:
                return seen
            reply = self._read()
            if "method" in reply:
                self.events.append(reply)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_child, json.dumps(message).encode() + b"\0")

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {TIMEOUT_S:.0f}s{self._tail()}")
            ready, _, _ = select.select([self._from_child], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed its DevTools pipe (exit {self._proc.poll()}){self._tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def _tail(self) -> str:
        try:
            return "; its log ends:\n" + self._log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
