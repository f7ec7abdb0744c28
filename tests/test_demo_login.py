"""The demo's dashboard login: usable from a browser, and the token never travels in a URL."""

import re
import subprocess
from pathlib import Path

import httpx

from example_app.main import create_app

ROOT = Path(__file__).resolve().parent.parent


async def test_a_browser_signs_in_with_a_form_and_gets_the_dashboard() -> None:
    app = create_app(admin_token="s3cret-token")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo") as client:
        form = await client.get("/admin/login")
        assert form.status_code == 200
        assert '<form method="post" action="/admin/login">' in form.text and 'name="token"' in form.text
        wrong = await client.post("/admin/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        assert "ic_admin_token" not in client.cookies
        signed_in = await client.post("/admin/login", data={"token": "s3cret-token"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/api/cache/dashboard"
        assert "s3cret-token" not in signed_in.headers["location"]
        dashboard = await client.get("/api/cache/dashboard")
        assert dashboard.status_code == 200
        assert (await client.get("/api/cache/stats")).status_code == 200  # the cookie authenticates the page's calls


async def test_a_token_in_the_query_string_signs_nobody_in() -> None:
    app = create_app(admin_token="s3cret-token")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo") as client:
        answer = await client.get("/admin/login", params={"token": "s3cret-token"})
        assert answer.status_code == 200 and "ic_admin_token" not in client.cookies


def test_make_demo_prints_hints_a_shell_can_paste() -> None:
    printed = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    with_query = re.findall(r"\S*http://\S*\?\S*", printed)
    assert with_query, printed
    for url in with_query:
        assert url.startswith("'") and url.endswith("'"), url  # zsh would glob an unquoted "?"
    assert "token=" not in printed
