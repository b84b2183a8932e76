"""The vendored front-end files, and what they need from the page around them.

Each folder with a ``VENDOR.toml`` (the console's and the API docs' static files,
``tests/vendor``) holds exactly the files it records, each hashing to its recorded sha256
(and naming its version, unless ``version_in_file = false``), beside the project's own files
that the record names in ``own``. Then, in Debian's Chromium against a small Starlette app served by
a real uvicorn under the console's strict CSP (``script-src 'self'; style-src 'self'``): htmx
runs, its meta config keeps it from injecting an inline ``<style>``, it sends the CSRF header
given by ``hx-headers`` on ``<body>``, Pico's form icons load, and axe-core injected by
Selenium runs although the page forbids inline scripts. A bare page served with the same CSP
shows that Chromium does enforce it there.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "mailer" / "web" / "console" / "static"
API_STATIC = ROOT / "mailer" / "web" / "api" / "static"
VENDOR = ROOT / "tests" / "vendor"
FOLDERS = [STATIC, API_STATIC, VENDOR]
RECORD = "VENDOR.toml"
FIELDS = ("name", "package", "version", "tarball", "path", "integrity", "sha256", "licence")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# What the console will send (issue 14), less what this page does not need.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The same, without data: images: Pico's form icons are then refused too.
CSP_NO_DATA = CSP.replace("img-src 'self' data:", "img-src 'self'")
HTMX_CONFIG = (
    '{"includeIndicatorStyles": false, "allowEval": false, "allowScriptTags": false,'
    ' "historyCacheSize": 0}'
)
TOKEN = "csrf-Zq3xV8pL1mN6bT0r"


def record(folder: Path) -> dict[str, Any]:
    with (folder / RECORD).open("rb") as f:
        return tomllib.load(f)


def problems(folder: Path) -> list[str]:
    """Every way ``folder`` differs from its ``VENDOR.toml``, one sentence each."""
    found: list[str] = []
    data = record(folder)
    files = data.get("file", [])
    own = set(data.get("own", []))
    for entry in files:
        name = entry.get("name", "?")
        missing = [field for field in FIELDS if not entry.get(field)]
        if missing:
            found.append(f"{name}: the record lacks {', '.join(missing)}")
            continue
        path = folder / name
        if not path.is_file():
            found.append(f"{name}: recorded but not in {folder.name}/")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            found.append(f"{name}: sha256 {digest}, recorded {entry['sha256']}")
        named = entry.get("version_in_file", True)
        if named and entry["version"] not in path.read_text(encoding="utf-8"):
            found.append(f"{name}: the file does not name version {entry['version']}")
        if not entry["tarball"].endswith(f"-{entry['version']}.tgz"):
            found.append(f"{name}: tarball {entry['tarball']} is not version {entry['version']}")
        scheme, _, value = entry["integrity"].partition("-")
        if scheme != "sha512" or len(base64.b64decode(value, validate=True)) != 64:
            found.append(f"{name}: integrity is not an npm sha512 value")
    names = [entry.get("name") for entry in files]
    if len(set(names)) != len(names):
        found.append("a file is recorded twice")
    for path in sorted(folder.iterdir()):
        if path.name != RECORD and path.name not in names and path.name not in own:
            found.append(f"{path.name}: in {folder.name}/ but not recorded in {RECORD}")
    return found


@pytest.mark.parametrize("folder", FOLDERS, ids=["console-static", "api-static", "tests-vendor"])
def test_each_folder_holds_exactly_its_recorded_files(folder: Path) -> None:
    """Every recorded file is there with its recorded hash and version, nothing else is."""
    assert record(folder)["file"], f"{folder} records no file"
    assert problems(folder) == []


def test_a_changed_missing_or_stray_file_is_named(tmp_path: Path) -> None:
    """The check finds a file edited after vendoring, one gone, and one nobody recorded."""
    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy)
    with (copy / "htmx.min.js").open("ab") as f:
        f.write(b"\n")
    (copy / "pico.min.css").unlink()
    (copy / "jquery.min.js").write_text("", encoding="utf-8")
    (copy / "console.css").write_text("", encoding="utf-8")  # the project's own: allowed
    found = problems(copy)
    assert len(found) == 3, found
    assert found[0].startswith("htmx.min.js: sha256 ")
    assert found[1:] == [
        "pico.min.css: recorded but not in static/",
        "jquery.min.js: in static/ but not recorded in VENDOR.toml",
    ]


# -- in Chromium, under the strict CSP -------------------------------------------------------


def page(*, config: bool, inline: bool) -> str:
    meta = f"<meta name=\"htmx-config\" content='{HTMX_CONFIG}'>" if config else ""
    script = "<script>document.title = 'inline ran'</script>" if inline else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vendored</title>{meta}
<link rel="stylesheet" href="/static/pico.min.css">
<script src="/static/htmx.min.js"></script>{script}
</head>
<body hx-headers='{{"X-CSRF-Token": "{TOKEN}"}}'>
<main><h1>Vendored files</h1>
<form><label for="pick">Pick</label>
<select id="pick" name="pick"><option>one</option><option>two</option></select>
<label><input type="checkbox" name="box" checked> Box</label></form>
<button id="ping" hx-post="/echo" hx-target="#out">Ping</button>
<p id="out">waiting</p></main></body></html>"""


async def home(request: Request) -> Response:
    bare = "bare" in request.query_params
    csp = CSP_NO_DATA if bare else CSP
    body = page(config=not bare, inline=bare)
    return HTMLResponse(body, headers={"Content-Security-Policy": csp})


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    kind = {"htmx.min.js": "text/javascript", "pico.min.css": "text/css"}[name]
    return Response((STATIC / name).read_bytes(), media_type=kind)


async def echo(request: Request) -> Response:
    said = f"{request.headers.get('hx-request')} {request.headers.get('x-csrf-token')}"
    return HTMLResponse(html.escape(said), headers={"Content-Security-Policy": CSP})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A real uvicorn in its own thread (Selenium blocks the test's)."""
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/static/{name}", static),
            Route("/echo", echo, methods=["POST"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Debian's Chromium, as the console's browser tests start it (its log kept)."""
    from tests.browser_support import chromium  # it imports this module: import here

    yield from chromium()


def refused(browser: Any) -> list[tuple[str, str]]:
    """What Chromium refused under the CSP since the last call: (the document or file whose
    action it refused, the directive), e.g. ``("htmx.min.js", "style-src")``."""
    found = set()
    for entry in browser.get_log("browser"):
        source, _, message = entry["message"].partition(" ")
        match = re.search(r"Content Security Policy directive:? [\"']([a-z-]+)", message)
        if match:
            found.add((source.rsplit("/", 1)[-1], match[1]))
    return sorted(found)


def test_htmx_and_pico_work_under_the_strict_csp(driver: Any, base_url: str) -> None:
    """htmx loads, takes its meta config, sends the hx-headers CSRF header on a POST and
    swaps the answer in, and Chromium refuses nothing on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/")
    assert driver.execute_script("return htmx.version") == "2.0.11"
    config = driver.execute_script(
        "return [htmx.config.includeIndicatorStyles, htmx.config.allowEval]"
    )
    assert config == [False, False]
    assert driver.execute_script("return document.querySelectorAll('style').length") == 0
    driver.find_element(By.ID, "ping").click()
    out = driver.find_element(By.ID, "out")
    WebDriverWait(driver, 10).until(lambda _: out.text != "waiting")
    assert out.text == f"true {TOKEN}"
    assert refused(driver) == []


def test_the_csp_is_enforced_on_a_bare_page(driver: Any, base_url: str) -> None:
    """Without the meta config, with an inline script and without data: images, Chromium
    refuses the inline script, htmx's indicator <style> and Pico's form icons."""
    driver.get(base_url + "/?bare")
    driver.find_element("id", "pick")  # the page is there
    assert driver.title == "vendored"  # the inline script did not run
    assert refused(driver) == [
        ("?bare", "img-src"),
        ("?bare", "script-src"),
        ("htmx.min.js", "style-src"),
    ]


def test_axe_injected_by_selenium_runs_despite_the_csp(driver: Any, base_url: str) -> None:
    """execute_async_script is not governed by the page's script-src: axe-core runs and
    reports, and finds nothing serious on this small page."""
    driver.get(base_url + "/")
    source = (VENDOR / "axe.min.js").read_text(encoding="utf-8")
    driver.set_script_timeout(30)
    found = driver.execute_async_script(
        source
        + """;
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ["violations"]}).then(
          (r) => done({version: axe.version, violations: r.violations.map((v) => [v.id, v.impact])}),
          (e) => done({error: String(e)}));"""
    )
    assert found.get("error") is None, found
    assert found["version"] == "4.14.1"
    serious = [v for v in found["violations"] if v[1] in ("serious", "critical")]
    assert serious == [], found["violations"]
    assert refused(driver) == []
