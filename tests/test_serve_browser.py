"""The service's web page in a real browser (issue #40, "A real browser"): a real ``partialface serve`` on a loopback
port (with an API-key file) and Debian's ``chromium`` driven by Playwright (PyPI; launched by ``executable_path``,
nothing downloaded). Verify two LFW photos of one person ("same" shown), enrol two people and identify a third photo
(the name shown) and a stranger ("unknown" shown), a non-image and a photo without a face (the service's error text
shown), the page at phone width (no sideways scrolling). Skips with a reason where LFW, the serve extra, Playwright or
a chromium executable is absent.

``PARTIALFACE_SCREENSHOTS=1`` also writes the screenshots linked from the README (docs/images/serve_*.png); a
normal run leaves the committed images alone."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("httpx", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

from test_serve import Server  # noqa: E402  (the real-uvicorn helper of tests/test_serve.py)

from partialface.serve.keys import new_key  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
SHOTS = os.environ.get("PARTIALFACE_SCREENSHOTS") == "1"
WAIT_MS = 60_000  # one request on 2 busy cores: a few seconds; generous


def _chromium() -> str | None:
    """Debian's chromium (``apt-get install chromium``), or any chromium on PATH; never a downloaded one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def lfw(lfw_root: Path) -> Path:
    return lfw_root / "lfw-deepfunneled"


def photo(lfw: Path, person: str, i: int) -> str:
    """The path of the ``i``-th photo (from 1, in sorted order) of ``person``."""
    return str(sorted((lfw / person).glob("*.jpg"))[i - 1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, lfw: Path) -> Iterator[dict[str, Any]]:
    """One server for the module: an empty gallery, write routes behind one API key."""
    tmp = tmp_path_factory.mktemp("serve-browser")
    keys = tmp / "keys.txt"
    key = new_key(keys)
    server = Server(tmp / "people.db", keys, tmp / "server.log")
    try:
        server.wait_ready()
        yield {"url": server.url, "key": key, "tmp": tmp}
    finally:
        server.stop()
    text = server.log.read_text(errors="replace")
    assert "Traceback" not in text and key not in text, text


@pytest.fixture(scope="module")
def browser(service: dict[str, Any]) -> Iterator[Any]:
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium executable found (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, service: dict[str, Any]) -> Iterator[Any]:
    """A fresh page (its own sessionStorage) that fails the test on any console error or CSP violation."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, base_url=service["url"])
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "HTTP" not in m.text
          and "status of 4" not in m.text else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def _open(page: Any, view: str) -> None:
    response = page.goto(f"/#{view}")
    if response is not None:  # the page's own headers: a strict policy, no sniffing
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    page.wait_for_selector("body[data-ready=true]")
    sync_api.expect(page.locator(f"#{view}")).to_be_visible()


def _shot(page: Any, name: str, full_page: bool = True) -> None:
    if SHOTS:
        page.screenshot(path=str(IMAGES / name), full_page=full_page)


def _side_by_side(*paths: str) -> bytes:
    """One PNG holding the photos side by side (a picture of several people)."""
    photos = [Image.open(p).convert("RGB") for p in paths]
    out = Image.new("RGB", (sum(p.width for p in photos), max(p.height for p in photos)), (255, 255, 255))
    x = 0
    for p in photos:
        out.paste(p, (x, 0))
        x += p.width
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return buf.getvalue()


def test_verify_same_person(page: Any, lfw: Path) -> None:
    expect = sync_api.expect
    _open(page, "verify")
    from partialface.models.catalogue import DEFAULT_MODEL

    expect(page.locator("#info")).to_contain_text(f"model {DEFAULT_MODEL}")
    page.set_input_files("#verify-a", photo(lfw, "Aaron_Peirsol", 1))
    page.set_input_files("#verify-b", photo(lfw, "Aaron_Peirsol", 3))
    expect(page.locator("label[for=verify-a] img.preview")).to_be_visible()
    # record what the page says while the request runs (aria-busy on the view, the status line)
    page.evaluate("""() => { window.seen = [];
        new MutationObserver(() => window.seen.push([document.querySelector('#verify').getAttribute('aria-busy'),
            document.querySelector('#status').textContent])).observe(document.body,
            {subtree: true, attributes: true, childList: true, characterData: true}); }""")
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#verify-verdict")).to_have_text("same", timeout=WAIT_MS)
    result = page.locator("#verify-result")
    expect(result).to_contain_text("threshold")
    expect(page.locator("#verify-facts")).to_contain_text("0.001")  # the FAR asked for
    # the operating point used: the default's per-visibility point for two whole faces (or a holistic model's)
    point = re.compile(r"operating point\s*(auto/((soft|sharp)/)?visible>=0\.90|holistic)")
    expect(page.locator("#verify-facts")).to_contain_text(point)
    expect(page.locator("#verify-regions tbody tr")).to_have_count(5)
    expect(page.locator("#verify-regions")).to_contain_text("left eye")
    expect(page.locator("#verify-explain")).to_be_visible()
    assert page.locator("#verify-explain").evaluate("img => img.naturalWidth") > 100  # the PNG decoded
    assert ["true", "Comparing the two photos…"] in page.evaluate("window.seen")  # said so while it ran
    assert page.locator("#verify").get_attribute("aria-busy") is None  # done: no longer busy
    _shot(page, "serve_verify.png")


def test_people_and_identify(page: Any, lfw: Path, service: dict[str, Any]) -> None:
    expect = sync_api.expect
    _open(page, "people")
    expect(page.locator("#people-empty")).to_be_visible()
    # without the key: the service's 401 as one readable line, nothing enrolled
    page.get_by_label("Name").fill("Aaron Peirsol")
    page.set_input_files("#enrol-photos", photo(lfw, "Aaron_Peirsol", 1))
    page.get_by_role("button", name="Enrol").click()
    expect(page.locator("#people-error")).to_contain_text("X-API-Key: missing")
    # with the key (kept in sessionStorage, sent as X-API-Key)
    page.get_by_label("API key").fill(service["key"])
    assert page.evaluate("sessionStorage.getItem('partialface.apiKey')") == service["key"]
    page.get_by_role("button", name="Enrol").click()
    rows = page.locator("#people-table tbody tr")
    expect(rows).to_have_count(1)
    expect(page.locator("#people-error")).to_be_hidden()
    page.get_by_label("Name").fill("Ann Veneman")
    page.set_input_files("#enrol-photos", photo(lfw, "Ann_Veneman", 1))
    page.get_by_role("button", name="Enrol").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#people-table")).to_contain_text("Aaron Peirsol")
    expect(page.locator("#people-table")).to_contain_text("Ann Veneman")
    expect(page.locator("#people-count")).to_contain_text("2 people")
    _shot(page, "serve_people.png")

    # identify: a third photo of an enrolled person (the name shown), then a stranger ("unknown")
    page.get_by_role("link", name="Identify").click()
    expect(page.locator("#identify")).to_be_visible()
    page.set_input_files("#identify-photo", photo(lfw, "Aaron_Peirsol", 3))
    page.get_by_role("button", name="Identify").click()
    names = page.locator("#identify-faces .face-name")
    expect(names.first).to_have_text("Aaron Peirsol", timeout=WAIT_MS)
    assert page.locator("#identify-canvas").evaluate("c => c.width") > 0
    expect(page.locator("#identify-canvas")).to_have_attribute("aria-label", "the photo with 1 face boxed: "
                                                              "Aaron Peirsol")
    # two people in one picture (all_faces): one named, one "unknown"
    page.set_input_files("#identify-photo", {"name": "two.png", "mimeType": "image/png", "buffer": _side_by_side(
        photo(lfw, "Aaron_Peirsol", 3), photo(lfw, "George_W_Bush", 2))})
    page.get_by_role("button", name="Identify").click()
    two = re.compile(r"with \d+ faces boxed: .*Aaron Peirsol")
    expect(page.locator("#identify-canvas")).to_have_attribute("aria-label", two)
    shown = names.all_inner_texts()
    assert "Aaron Peirsol" in shown and "unknown" in shown, shown
    _shot(page, "serve_identify.png")
    page.set_input_files("#identify-photo", photo(lfw, "George_W_Bush", 2))
    page.get_by_role("button", name="Identify").click()
    expect(names.first).to_have_text("unknown", timeout=WAIT_MS)
    expect(page.locator("#identify-faces")).not_to_contain_text("Aaron Peirsol —")

    # remove one person (the page asks first)
    page.get_by_role("link", name="People").click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove Ann Veneman").click()
    expect(rows).to_have_count(1)
    expect(page.locator("#people-table")).not_to_contain_text("Ann Veneman")


def test_errors_shown(page: Any, lfw: Path, service: dict[str, Any]) -> None:
    expect = sync_api.expect
    _open(page, "verify")
    # a text file as photo A: the service's 415, its one-line detail shown
    page.set_input_files("#verify-a", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo\n"})
    page.set_input_files("#verify-b", photo(lfw, "Aaron_Peirsol", 1))
    page.get_by_role("button", name="Compare").click()
    error = page.locator("#verify-error")
    expect(error).to_be_visible(timeout=WAIT_MS)
    expect(error).to_contain_text("a: not one of JPEG, PNG")
    expect(page.locator("#verify-result")).to_be_hidden()
    for path, media in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        r = page.request.get(path)
        assert r.ok and r.headers["content-type"].startswith(media) and r.headers["x-content-type-options"] == "nosniff"
    # a photo without a face (the service's 422)
    blank = io.BytesIO()
    Image.new("RGB", (240, 240), (120, 160, 200)).save(blank, "PNG")
    page.set_input_files("#verify-a", {"name": "sky.png", "mimeType": "image/png", "buffer": blank.getvalue()})
    page.get_by_role("button", name="Compare").click()
    expect(error).to_contain_text("a: no face found", timeout=WAIT_MS)
    expect(page.locator("#verify-result")).to_be_hidden()


def test_keyboard_and_phone_width(browser: Any, service: dict[str, Any], lfw: Path) -> None:
    """Every view fits 390 px (no sideways scrolling); the views and the file fields are reached with Tab."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=service["url"],
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        for view in ("verify", "people", "identify"):
            _open(page, view)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{view}: {width} px wide at a 390 px viewport"
        page.goto("about:blank")  # a fresh load without a fragment: Tab starts at the top of the page
        page.goto("/")
        page.wait_for_selector("body[data-ready=true]")
        focused = []
        for _ in range(8):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
        assert {"tab-people", "tab-identify", "api-key", "verify-a", "verify-b"} <= set(focused), focused
        # a verdict at phone width: still no sideways scrolling (the table, the bar, the explanation picture)
        page.set_input_files("#verify-a", photo(lfw, "Aaron_Peirsol", 1))
        page.set_input_files("#verify-b", photo(lfw, "Aaron_Peirsol", 3))
        page.get_by_role("button", name="Compare").focus()
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#verify-verdict")).to_have_text("same", timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.locator("#verify-result").evaluate("node => node.scrollIntoView()")
        _shot(page, "serve_phone.png", full_page=False)
    finally:
        context.close()
