"""The admin dashboard in a real headless Chromium, against the example app served by uvicorn.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and the ``selenium`` package; skipped without them, except under ``CI=true`` where that is a failure.
"""

import contextlib
import os
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from example_app.examples import secured_admin
from example_app.main import create_app
from intelligent_cache import MemoryBackend

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "dashboard-test-token"
AUTH = {"X-Admin-Token": TOKEN}
WAIT = 10  # seconds an expected change may take to appear (the page polls /stats every 2 s)


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed"
    return None


@pytest.fixture(scope="module", autouse=True)
def _require_browser() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server() -> Iterator[str]:
    """The example app (memory backend) under uvicorn on a free loopback port."""
    with serving(create_app(admin_token=TOKEN)) as url:
        yield url


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread."""
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-dashboard-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=10) as client:
        yield client


@pytest.fixture
def driver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,2200",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(20)
    browser.set_script_timeout(10)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


# -- helpers -------------------------------------------------------------------------------------------------


def by_testid(browser, testid: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def wait_for(browser, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.05).until(lambda _: condition(), message)


def text(browser, css: str) -> str | None:
    """An element's text, read in one step (polled parts of the page are re-rendered every 2 s)."""
    return browser.execute_script(
        "const node = document.querySelector(arguments[0]); return node && node.textContent", css
    )


def text_by_testid(browser, testid: str) -> str | None:
    return text(browser, f'[data-testid="{testid}"]')


def wait_idle(browser) -> None:
    """Until the page has no API request in flight."""
    wait_for(browser, lambda: browser.execute_script("return document.documentElement.dataset.pending") == "0", "idle")


def listed_keys(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('[data-testid=key-row]')].map((row) => row.dataset.key)"
    )


def listed_states(browser) -> dict[str, str]:
    """The state each listed key shows (``fresh``, ``invalidated``...; the kind for non-responses)."""
    return browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-testid=key-row]')]"
        ".map((row) => [row.dataset.key, row.dataset.state]))"
    )


def detail_fields(browser) -> dict[str, str]:
    return browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#key-detail dd')]"
        ".map((node) => [node.dataset.field, node.textContent]))"
    )


def messages(browser, kind: str) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('[data-testid=' + arguments[0] + '-message] span')]"
        ".map((node) => node.textContent)",
        kind,
    )


def key_row(browser, key: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'tr[data-testid="key-row"][data-key="{key}"]')


def accept_confirm(browser, expected_text: str, *, accept: bool = True) -> None:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    alert = WebDriverWait(browser, WAIT).until(expected_conditions.alert_is_present())
    assert expected_text in alert.text
    if accept:
        alert.accept()
    else:
        alert.dismiss()


def submit(browser, input_testid: str, text: str, button_testid: str) -> None:
    field = by_testid(browser, input_testid)
    field.clear()
    field.send_keys(text)
    by_testid(browser, button_testid).click()


def sign_in(browser, token: str) -> None:
    """Fill the login page's one field and submit its form, as a person would."""
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.NAME, "token")
    field.send_keys(token)
    field.submit()


def chart(browser) -> dict[str, str]:
    return browser.execute_script(
        "const d = document.getElementById('hit-rate-chart').dataset;"
        "return {points: d.points, seeded: d.seeded, lifetime: d.lifetime}"
    )


def api_keys(http: httpx.Client) -> set[str]:
    body = http.get("/api/cache/keys", params={"limit": 1000}, headers=AUTH).json()
    assert body["cursor"] == 0
    return {item["key"] for item in body["keys"]}


def png_summary(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decoded pixels) of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, size = 8, b"", (0, 0)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, chunk = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    return size[0], size[1], len(set(zlib.decompress(idat)))


# -- the test --------------------------------------------------------------------------------------------------

TRAFFIC = [
    "/spaces",
    "/spaces/1",
    "/spaces/2",
    "/spaces/1/items?page=1",
    "/spaces/1/items?page=2",
    "/spaces/2/items/1",
    *(f"/spaces/1/items/{item}" for item in range(1, 31)),
]


def test_dashboard_end_to_end(live_server: str, http: httpx.Client, driver, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    for url in TRAFFIC:
        assert http.get(url).headers["x-cache"] == "MISS"
    every_key = api_keys(http)
    assert len(every_key) == len(TRAFFIC) == 36

    # The page itself is behind the admin auth dependency: a plain navigation gets 401.
    assert http.get("/api/cache/dashboard").status_code == 401
    # So the navigation carries the header (as an operator's auth proxy would); the page's own API calls do not.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": AUTH})
    driver.get(live_server + "/api/cache/dashboard")
    wait_for(driver, lambda: driver.execute_script("return document.readyState") == "complete", "page load")
    by_testid(driver, "auto-refresh").click()  # no polling while the header is switched off
    wait_idle(driver)
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})

    # Without a token the API answers 401, and the page says so.
    by_testid(driver, "token-input").clear()
    by_testid(driver, "token-save").click()
    wait_idle(driver)
    assert [text for text in messages(driver, "error") if text.startswith("401 not authenticated")]
    assert text_by_testid(driver, "health-status") == "locked"
    assert "401" in text(driver, '[data-testid="key-rows"]')

    # With the token: health, backend and the running app's keys.
    assert by_testid(driver, "header-name-input").get_attribute("value") == "X-Admin-Token"
    submit(driver, "token-input", TOKEN, "token-save")
    wait_idle(driver)
    assert set(listed_keys(driver)) == every_key
    assert messages(driver, "error") == []
    # The chart does not start empty: its first point (and a dashed line) is the lifetime hit rate.
    assert chart(driver) == {"points": "1", "seeded": "true", "lifetime": "0.0000"}  # 36 misses, no hit yet
    # The memory backend's budget, and each entry's size.
    assert text_by_testid(driver, "memory-entries-value") == "36 / 5,000"
    assert (text_by_testid(driver, "memory-bytes-value") or "").endswith(" / 64.0 MiB")
    body = http.get("/spaces/1").content  # a HIT: the stored body
    assert text(driver, 'tr[data-key="GET:spaces:1"] [data-testid="key-size"]') == f"{len(body)} B"
    assert driver.execute_script("return document.getElementById('last-error').hidden") is True
    by_testid(driver, "auto-refresh").click()  # live again: the page polls /stats every 2 s
    wait_for(driver, lambda: text_by_testid(driver, "health-status") == "healthy", "health")
    # The key list refreshes while live: the HIT above shows in the entry's hit count.
    hits = 'tr[data-key="GET:spaces:1"] [data-testid="key-hits"]'
    wait_for(driver, lambda: text(driver, hits) == "1", "per-key hits")
    assert text_by_testid(driver, "backend-name") == "memory"
    assert text_by_testid(driver, "breaker-state") == "n/a"
    wait_for(driver, lambda: text_by_testid(driver, "kpi-misses-value") == "36", "misses card")
    assert text_by_testid(driver, "stats-scope") == "stats: this process"
    assert driver.execute_script("return sessionStorage.getItem('ic.token')") == TOKEN

    # Paging with the cursor: 25 per page, Next, then Previous back to the first page.
    Select(by_testid(driver, "page-size")).select_by_visible_text("25")
    wait_for(driver, lambda: len(listed_keys(driver)) == 25, "first page of 25")
    first_page = listed_keys(driver)
    assert by_testid(driver, "prev-page").get_attribute("disabled") is not None
    by_testid(driver, "next-page").click()
    wait_for(driver, lambda: len(listed_keys(driver)) == 11, "second page of 11")
    assert set(first_page) | set(listed_keys(driver)) == every_key
    assert by_testid(driver, "next-page").get_attribute("disabled") is not None
    by_testid(driver, "prev-page").click()
    wait_for(driver, lambda: listed_keys(driver) == first_page, "back on the first page")

    # Pattern search.
    submit(driver, "pattern-input", "GET:spaces:2*", "search-button")
    wait_for(driver, lambda: set(listed_keys(driver)) == {"GET:spaces:2", "GET:spaces:2:items:1"}, "pattern search")
    Select(by_testid(driver, "page-size")).select_by_visible_text("100")
    submit(driver, "pattern-input", "*", "search-button")
    wait_for(driver, lambda: set(listed_keys(driver)) == every_key, "every key again")

    # Entry detail.
    key_row(driver, "GET:spaces:1").find_element("css selector", '[data-testid="key-link"]').click()
    detail = by_testid(driver, "key-detail")
    wait_for(driver, lambda: 'data-field="route"' in detail.get_attribute("innerHTML"), "entry detail")
    fields = detail_fields(driver)
    assert fields["key"] == "GET:spaces:1"
    assert fields["kind"] == "response"
    assert fields["route"] == "/spaces/{space_id}"
    assert fields["path"] == "/spaces/1"
    assert fields["status"] == "200"
    assert fields["state"].startswith("Fresh for ")
    assert fields["valid"] == "yes"
    assert set(listed_states(driver).values()) == {"fresh"}

    # Delete one key: dismissing the confirm keeps it, accepting deletes it.
    victim = "GET:spaces:1:items:7"
    key_row(driver, victim).find_element("css selector", '[data-testid="key-delete"]').click()
    accept_confirm(driver, victim, accept=False)
    assert http.get(f"/api/cache/keys/{victim}", headers=AUTH).status_code == 200
    key_row(driver, victim).find_element("css selector", '[data-testid="key-delete"]').click()
    accept_confirm(driver, victim)
    wait_for(driver, lambda: victim not in listed_keys(driver), "deleted key gone from the list")
    assert f"Deleted {victim}" in messages(driver, "success")
    assert http.get(f"/api/cache/keys/{victim}", headers=AUTH).status_code == 404
    assert api_keys(http) == every_key - {victim}

    # Clear by pattern.
    submit(driver, "clear-pattern-input", "GET:spaces:1:items*", "clear-pattern-button")
    accept_confirm(driver, "GET:spaces:1:items*")
    survivors = {"GET:spaces", "GET:spaces:1", "GET:spaces:2", "GET:spaces:2:items:1"}
    wait_for(driver, lambda: set(listed_keys(driver)) == survivors, "cleared keys gone from the list")
    assert "Cleared 31 entries matching GET:spaces:1:items*" in messages(driver, "success")
    assert api_keys(http) == survivors

    # Invalidate a path: /spaces/2 (and the /spaces listing) recompute, /spaces/1 stays cached.
    assert http.get("/spaces/2").headers["x-cache"] == "HIT"
    submit(driver, "invalidate-path-input", "/spaces/2", "invalidate-button")
    accept_confirm(driver, "/spaces/2")
    wait_for(driver, lambda: "Invalidated path /spaces/2" in messages(driver, "success"), "invalidated")
    # The key list says which entries that write killed (/spaces/2, below it, and the /spaces listing).
    states = {
        "GET:spaces": "invalidated",
        "GET:spaces:1": "fresh",
        "GET:spaces:2": "invalidated",
        "GET:spaces:2:items:1": "invalidated",
    }
    wait_for(driver, lambda: listed_states(driver) == states, "invalidated entries marked")
    labels = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=key-row]')]"
        ".map((row) => row.querySelector('[data-testid=key-state]').textContent)"
    )
    assert sorted(label.split(" for ")[0] for label in labels) == ["Fresh", "Invalidated", "Invalidated", "Invalidated"]
    key_row(driver, "GET:spaces:2").find_element("css selector", '[data-testid="key-link"]').click()
    wait_for(driver, lambda: detail_fields(driver).get("key") == "GET:spaces:2", "invalidated entry detail")
    fields = detail_fields(driver)
    assert fields["state"].startswith("Invalidated")
    assert "Fresh" not in fields["state"]
    assert fields["valid"].startswith("no")
    # The toggle hides them, and the page says how many it hid.
    by_testid(driver, "hide-invalidated").click()
    wait_for(driver, lambda: listed_keys(driver) == ["GET:spaces:1"], "invalidated entries hidden")
    assert "3 invalidated hidden" in (text_by_testid(driver, "page-info") or "")
    by_testid(driver, "hide-invalidated").click()
    wait_for(driver, lambda: listed_states(driver) == states, "invalidated entries shown again")
    assert http.get("/spaces/2").headers["x-cache"] == "MISS"
    assert http.get("/spaces").headers["x-cache"] == "MISS"
    assert http.get("/spaces/1").headers["x-cache"] == "HIT"

    # API errors are shown: a path that does not start with '/' is a 422.
    submit(driver, "invalidate-path-input", "spaces/1", "invalidate-button")
    accept_confirm(driver, "spaces/1")
    wait_for(driver, lambda: any(text.startswith("Invalidate: 422") for text in messages(driver, "error")), "422")

    # More traffic: the KPI cards, the route table and the chart follow.
    for _ in range(5):
        assert http.get("/spaces/1").headers["x-cache"] == "HIT"
    stats = http.get("/api/cache/stats", headers=AUTH).json()
    assert stats["hits"] == 8
    wait_for(driver, lambda: text_by_testid(driver, "kpi-hits-value") == "8", "hits card updated")
    route_hits = 'tr[data-route="/spaces/{space_id}"] td:nth-child(2)'
    wait_for(driver, lambda: text(driver, route_hits) == "8", "route row updated")
    hit_rate = text_by_testid(driver, "kpi-hit_rate-value")
    assert hit_rate == f"{stats['hit_rate'] * 100:.1f}%"
    points = "return Number(document.getElementById('hit-rate-chart').dataset.points || 0)"
    wait_for(driver, lambda: driver.execute_script(points) >= 1, "chart")

    # The route table sorts by the clicked column.
    driver.find_element("css selector", '#route-table th[data-sort="route"]').click()
    routes = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=route-row]')].map((row) => row.dataset.route)"
    )
    assert routes == sorted(stats["routes"])
    driver.find_element("css selector", '#route-table th[data-sort="route"]').click()
    assert driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=route-row]')].map((row) => row.dataset.route)"
    ) == sorted(stats["routes"], reverse=True)

    # While live, the key list follows too: a new entry appears, and a write made elsewhere marks what it
    # invalidated, without a click. Rows still shown are updated in place (a held row is not replaced).
    held = key_row(driver, "GET:spaces:1")
    assert http.get("/spaces/2/items?page=1").headers["x-cache"] == "MISS"
    wait_for(driver, lambda: "GET:spaces:2:items:page=1" in listed_keys(driver), "new key listed")
    assert http.patch("/spaces/1/items/1", json={"name": "Fork", "price": 2.0}).status_code == 200
    wait_for(driver, lambda: held.get_attribute("data-state") == "invalidated", "outside write shown")
    entries = f"{len(api_keys(http))} / 5,000"
    wait_for(driver, lambda: text_by_testid(driver, "memory-entries-value") == entries, "budget follows")

    driver.save_screenshot(str(tmp_path / "dashboard.png"))

    # Clear all needs the word CLEAR typed.
    button = by_testid(driver, "clear-all-button")
    assert button.get_attribute("disabled") is not None
    by_testid(driver, "clear-all-input").send_keys("clea")
    assert button.get_attribute("disabled") is not None
    by_testid(driver, "clear-all-input").clear()
    by_testid(driver, "clear-all-input").send_keys("CLEAR")
    assert button.get_attribute("disabled") is None
    button.click()
    wait_for(driver, lambda: listed_keys(driver) == [], "every key gone")
    assert api_keys(http) == set()

    # The page also lives at <prefix>/ and finds the API from there; the token survives in sessionStorage.
    assert http.get("/spaces/2/items/1").headers["x-cache"] == "MISS"
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": AUTH})
    driver.get(live_server + "/api/cache/")
    wait_for(driver, lambda: driver.execute_script("return document.readyState") == "complete", "page load")
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
    assert by_testid(driver, "token-input").get_attribute("value") == TOKEN
    by_testid(driver, "token-save").click()
    wait_idle(driver)
    assert listed_keys(driver) == ["GET:spaces:2:items:1"]
    assert messages(driver, "error") == []

    # No JavaScript errors (failed requests are the 401 and 422 the page was meant to show).
    logs = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    unexpected = [entry["message"] for entry in logs if not ("401" in entry["message"] or "422" in entry["message"])]
    assert unexpected == []

    width, height, distinct = png_summary(tmp_path / "dashboard.png")
    assert width >= 800
    assert height >= 600
    assert distinct > 50
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000


class RefusesOnce(MemoryBackend):
    """A backend whose first lookup fails, as a Redis reached with a bad URL would (then it recovers)."""

    failed = False

    async def fetch(self, key: str, generation_keys: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise ConnectionError("Error 111 connecting to redis://app:hunter2@cache.internal:6379. Refused.")
        return await super().fetch(key, generation_keys)


def test_secured_admin_signs_in_from_a_browser_with_a_cookie(driver) -> None:
    """The secured example's dashboard in a browser: sign in with a form, then every call rides an HttpOnly cookie."""
    app = secured_admin.create_app(RefusesOnce(), admin_token=TOKEN)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/products").headers["x-cache"] == "SKIP"  # the failed lookup
        assert http.get("/products").headers["x-cache"] == "MISS"
        assert http.get("/api/cache/dashboard").status_code == 401

        driver.get(url + "/admin/login")
        sign_in(driver, "wrong")
        wait_for(driver, lambda: "Wrong token." in driver.page_source, "refused")
        assert driver.get_cookies() == []

        sign_in(driver, TOKEN)
        wait_for(driver, lambda: driver.current_url == url + "/api/cache/dashboard", "dashboard")
        wait_for(driver, lambda: driver.execute_script("return document.readyState") == "complete", "page load")
        wait_for(driver, lambda: text_by_testid(driver, "health-status") == "healthy", "health")
        wait_for(driver, lambda: listed_keys(driver) == ["GET:products"], "keys")
        assert messages(driver, "error") == []
        assert text_by_testid(driver, "kpi-misses-value") == "1"
        # The error the backend gave, kept for whoever looks later; its password masked.
        last_error = text_by_testid(driver, "last-error") or ""
        assert last_error.startswith("last error: ConnectionError: Error 111 connecting to redis://app:***@cache")
        assert "hunter2" not in driver.page_source

        # The token lives in a cookie the page's script cannot read, sent to the admin routes only.
        (cookie,) = driver.get_cookies()
        assert (cookie["name"], cookie["value"], cookie["path"]) == ("ic_admin_token", TOKEN, "/api/cache")
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        assert driver.execute_script("return document.cookie") == ""
        assert by_testid(driver, "token-input").get_attribute("value") == ""
        assert driver.execute_script("return sessionStorage.getItem('ic.token')") is None

        # A write through the page works with the cookie alone.
        submit(driver, "clear-all-input", "CLEAR", "clear-all-button")
        wait_for(driver, lambda: listed_keys(driver) == [], "cleared")
        assert http.get("/products").headers["x-cache"] == "MISS"
