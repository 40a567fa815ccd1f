"""Logging in to the UI: the redirect, the login form, the cookie (what it holds, its flags, where
it counts), logout, and the cookie being worthless on the recording and replay endpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from ui_helpers import Client

from bitfab.server.auth import COOKIE_NAME
from bitfab.store import SQLiteStore

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MakeClient = Callable[..., Client]


def login(client: Client, secret: str, next_path: str = "/", **headers: str) -> httpx.Response:
    body = f"key={quote(secret)}&next={quote(next_path)}"
    return client.post("/login", content=body, headers={**FORM, **headers})


def test_pages_redirect_to_the_login_page(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """Without a key a page sends the browser to /login, which comes back to it afterwards."""
    client = make_client(auth_db[0], auth=True)
    answer = client.get("/runs?key=triage")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fruns%3Fkey%3Dtriage"
    form = client.get(answer.headers["location"])
    assert form.status_code == 200
    assert 'name="key" type="password"' in form.text
    assert 'name="next" value="/runs?key=triage"' in form.text
    assert client.get("/api/v1/functions").status_code == 401  # the API answers, no redirect


@pytest.mark.parametrize("scope", ["read", "all"])
def test_login_sets_a_cookie_holding_the_key(
    scope: str, auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """A read or all key: 303 back to the page, cookie HttpOnly, SameSite=Strict, Path=/."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    answer = login(client, secrets[scope], "/runs")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/runs"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={secrets[scope]};")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= flags and "secure" not in flags
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert client.get("/runs").status_code == 200
    assert client.get("/api/v1/functions").status_code == 200  # a GET read endpoint
    assert client.get("/traces/nope").status_code == 404


def test_the_cookie_is_secure_over_https(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """Over https (or behind a proxy saying X-Forwarded-Proto: https) the cookie is Secure."""
    db, secrets = auth_db
    direct = make_client(db, auth=True, base_url="https://testserver")
    assert "secure" in login(direct, secrets["read"]).headers["set-cookie"].lower()
    proxied = make_client(db, auth=True)
    answer = login(proxied, secrets["read"], **{"X-Forwarded-Proto": "https"})
    assert "secure" in answer.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("secret", "status", "message"),
    [
        ("bfk_not-a-key", 401, "Unknown, revoked or mistyped key"),
        ("hello <script>", 401, "Unknown, revoked or mistyped key"),
        ("", 401, "Unknown, revoked or mistyped key"),
        ("revoked", 401, "Unknown, revoked or mistyped key"),
        ("ingest", 403, "This key may not read"),
    ],
)
def test_a_bad_key_is_refused_without_a_cookie(
    secret: str,
    status: int,
    message: str,
    auth_db: tuple[Path, dict[str, str]],
    make_client: MakeClient,
) -> None:
    """Unknown, malformed, revoked: 401; a key without read scope: 403. The form again."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    answer = login(client, secrets.get(secret, secret))
    assert answer.status_code == status
    assert message in answer.text
    assert "set-cookie" not in answer.headers
    assert "<script>" not in answer.text
    assert client.get("/").status_code == 303


def test_a_cookie_works_on_every_server_process(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """Stateless: a cookie set by one app is accepted by another over the same store."""
    db, secrets = auth_db
    first, second = make_client(db, auth=True), make_client(db, auth=True)
    login(first, secrets["read"])
    second.cookies.set(COOKIE_NAME, first.cookies[COOKIE_NAME])
    assert second.get("/functions").status_code == 200


def test_revoking_the_key_logs_the_browser_out(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """The cookie is checked on every request: a revoked key sends the browser to /login."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    login(client, secrets["all"])
    assert client.get("/").status_code == 200
    with SQLiteStore(db) as store:
        key = next(k for k in store.api_keys() if k.name == "all")
        store.revoke_api_key(key.id)
    assert client.get("/").status_code == 303
    assert client.get("/api/v1/functions").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/bitfab/v1/ingest", {"spans": []}),
        ("POST", "/api/sdk/replay/start", {"traceFunctionKey": "triage"}),
        ("POST", "/api/sdk/replay/complete", {"testRunId": "x"}),
        ("POST", "/api/sdk/otel/v1/traces", {"resourceSpans": []}),
        ("POST", "/api/sdk/replay/interrupt", {"testRunId": "x"}),
    ],
)
def test_the_cookie_is_refused_on_write_endpoints(
    method: str,
    path: str,
    body: dict[str, object],
    auth_db: tuple[Path, dict[str, str]],
    make_client: MakeClient,
) -> None:
    """CSRF: recording and replay endpoints take only a bearer key, never the cookie."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    client.cookies.set(COOKIE_NAME, secrets["all"])
    answer = client.request(method, path, json=body)
    assert answer.status_code == 401, (path, answer.status_code)
    assert answer.json()["error"] == "unauthorized"
    bearer = client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {secrets['all']}"}
    )
    assert bearer.status_code != 401


def test_logout_clears_the_cookie(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """POST /logout expires the cookie and goes to the login page."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    login(client, secrets["read"])
    page = client.get("/").text
    assert 'action="/logout"' in page
    answer = client.post("/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE_NAME}=") and "max-age=0" in cookie
    assert COOKIE_NAME not in client.cookies
    assert client.get("/").status_code == 303


def test_login_and_logout_from_another_site_are_refused(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """A form posted from another origin can't log a browser in (or out)."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    evil = {"Origin": "https://evil.example"}
    assert login(client, secrets["read"], **evil).status_code == 403
    assert COOKIE_NAME not in client.cookies
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert login(client, secrets["read"], **cross).status_code == 403
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert login(client, secrets["read"], **same).status_code == 303
    assert client.post("/logout", headers=evil).status_code == 403
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    "target",
    ["//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)", "runs"],
)
def test_login_never_redirects_off_the_server(
    target: str, auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """``next`` must be a path on this server; anything else goes to /."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    assert login(client, secrets["read"], target).headers["location"] == "/"


def test_a_key_without_read_scope_in_the_cookie_gets_403(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """An ingest key planted in the cookie: a 403 page, not a redirect loop."""
    db, secrets = auth_db
    client = make_client(db, auth=True)
    client.cookies.set(COOKIE_NAME, secrets["ingest"])
    answer = client.get("/")
    assert answer.status_code == 403 and "text/html" in answer.headers["content-type"]


def test_login_bodies_are_bounded(
    auth_db: tuple[Path, dict[str, str]], make_client: MakeClient
) -> None:
    """A huge or non-form body is a 4xx page."""
    db, _ = auth_db
    client = make_client(db, auth=True)
    assert client.post("/login", content="key=" + "x" * 100_000, headers=FORM).status_code == 413
    assert client.post("/login", json={"key": "x"}).status_code == 415


def test_without_auth_there_is_no_login(demo: Client) -> None:
    """auth=False: /login goes home, pages have no logout button."""
    answer = demo.get("/login?next=/runs")
    assert answer.status_code == 303 and answer.headers["location"] == "/runs"
    assert 'action="/logout"' not in demo.get("/").text
