"""The review server against a hostile client: foreign Host headers (DNS rebinding), integers too
large for the catalog, and guessing reviewer tokens."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner
from web_support import copy_of, demo_run, quarantined

import sanitize.cli.review
from sanitize import cli
from sanitize.catalog import AuditRecord
from sanitize.config import Settings
from sanitize.web.app import create_app
from sanitize.web.auth import add_reviewer
from sanitize.web.throttle import LoginThrottle
from sanitize.workspace import Workspace

HUGE = "99999999999999999999999"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(Settings(home=tmp_path / "home", catalog_url=None))


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Workspace, str]:
    home, run_id = demo_run(tmp_path_factory)
    return copy_of(home, tmp_path / "demo"), run_id


def client(app: FastAPI, host: str = "127.0.0.1:8765", address: str = "10.0.0.1") -> TestClient:
    return TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False, client=(address, 50000))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- Host header -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8765", "localhost", "LocalHost:80", "[::1]", "[::1]:8765", "localhost."]
)
def test_loopback_names_are_served_by_default(ws: Workspace, host: str) -> None:
    r = client(create_app(ws), host).get("/")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8765",
        "127.0.0.1.evil.example",
        "localhost.evil.example:8765",
        "[::2]:8765",
        "127.0.0.2",
        "::1",  # an IPv6 address in a Host header must be in brackets
        "127.0.0.1:8765:1",
        "127.0.0.1:port",
    ],
)
def test_any_other_host_is_refused_before_a_route_runs(ws: Workspace, host: str) -> None:
    add_reviewer(ws.catalog, "ana")
    c = client(create_app(ws), "127.0.0.1")
    for method, url in (("GET", "/"), ("GET", "/static/review.css"), ("POST", "/login")):
        r = c.request(method, url, headers={"host": host}, data={"token": "srt_x"} if method == "POST" else None)
        assert r.status_code == 400, (host, url)
        assert r.headers["content-type"].startswith("text/plain")
        assert f"refused the host {host.lower()!r}" in r.text
        assert r.headers["x-frame-options"] == "DENY"
    with ws.catalog.session() as s:
        assert s.scalars(select(AuditRecord.action)).all() == ["reviewer.add"], "the login route never ran"


def test_a_refused_host_is_escaped_and_cut_short(ws: Workspace) -> None:
    r = client(create_app(ws)).get("/", headers={"host": "<script>alert(1)</script>" + "a" * 500})
    assert r.status_code == 400
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    assert len(r.text) < 400


def test_a_request_without_a_host_is_refused(ws: Workspace) -> None:
    r = client(create_app(ws)).get("/", headers={"host": ""})
    assert r.status_code == 400 and "Host" in r.text


def test_allowed_hosts_add_names_to_loopback(ws: Workspace) -> None:
    app = create_app(ws, allowed_hosts=["Review.Example.org", "10.1.2.3:9000", "::1"])
    assert client(app, "review.example.org").get("/").status_code == 200
    assert client(app, "review.example.org:8765").get("/").status_code == 200
    assert client(app, "10.1.2.3:9000").get("/").status_code == 200
    assert client(app, "10.1.2.3:9001").get("/").status_code == 400, "a name given with a port allows that port"
    assert client(app, "localhost:8765").get("/").status_code == 200
    assert client(app, "evil.example").get("/").status_code == 400


@pytest.mark.parametrize("name", ["", "*", "evil.example/x", "a b", "http://evil.example", "host:0x50"])
def test_a_malformed_allowed_host_is_refused_at_start(ws: Workspace, name: str) -> None:
    with pytest.raises(ValueError, match="allowed host"):
        create_app(ws, allowed_hosts=[name])


def test_review_passes_allowed_hosts_and_its_listen_host(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setenv("SANITIZE_HOME", str(ws.settings.home))
    monkeypatch.setattr(sanitize.cli.review.uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))

    result = CliRunner().invoke(
        cli.app, ["review", "--host", "192.168.5.7", "--allowed-host", "review.lan", "--allowed-host", "box"]
    )

    assert result.exit_code == 0, result.output
    assert served["host"] == "192.168.5.7"
    for host, status in (("review.lan:8765", 200), ("box", 200), ("192.168.5.7:8765", 200), ("evil.example", 400)):
        assert client(served["app"], host).get("/").status_code == status, host


# --- integers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"page": HUGE}, "page"),
        ({"page": "-" + HUGE}, "page"),
        ({"page": str(10**9 + 1)}, "page"),
        ({"label": HUGE}, "label"),
        ({"label": "-" + HUGE}, "label"),
        ({"label": str(2**63)}, "label"),
        ({"label": "12"}, "label"),  # within int64, but not one of the digits' classes
        ({"per_page": HUGE}, "per_page"),
        ({"page": "1" * 5000}, "page"),
        ({"page": "1_000"}, "page"),
    ],
)
def test_out_of_range_integers_are_a_400_naming_the_parameter(
    demo: tuple[Workspace, str], params: dict[str, str], name: str
) -> None:
    ws, run_id = demo
    c = client(create_app(ws))
    sid = next(iter(quarantined(ws, run_id)))
    for url in (f"/runs/{run_id}/quarantine", f"/runs/{run_id}/samples/{sid}"):
        if url.endswith(sid) and name in ("page", "per_page"):
            continue  # a sample page ignores the paging parameters
        r = c.get(url, params=params)
        assert r.status_code == 400, (url, r.status_code, r.text[:300])
        assert name in r.text


def test_the_last_allowed_page_is_a_404_not_a_500(demo: tuple[Workspace, str]) -> None:
    ws, run_id = demo
    r = client(create_app(ws)).get(f"/runs/{run_id}/quarantine", params={"page": str(10**9)})
    assert r.status_code == 404 and "past the last page" in r.text


@pytest.mark.parametrize("thumb", [HUGE, "-1", "2"])
def test_a_thumbnail_flag_is_0_or_1(demo: tuple[Workspace, str], thumb: str) -> None:
    ws, run_id = demo
    sid = next(iter(quarantined(ws, run_id)))
    r = client(create_app(ws)).get(f"/img/{sid}", params={"thumb": thumb})
    assert r.status_code == 400 and "thumb" in r.text


def test_a_huge_new_label_is_a_400(demo: tuple[Workspace, str]) -> None:
    ws, run_id = demo
    c = client(create_app(ws))
    token = add_reviewer(ws.catalog, "ana")
    assert c.post("/login", data={"token": token}, follow_redirects=False).status_code == 303
    csrf = c.get("/").text.split('<meta name="csrf-token" content="')[1].split('"')[0]
    sid = next(iter(quarantined(ws, run_id)))
    r = c.post(
        f"/runs/{run_id}/decide",
        data={"csrf_token": csrf, "action": "relabel", "sample_id": sid, "new_label": HUGE},
        headers={"accept": "application/json"},
    )
    assert r.status_code == 400 and "new_label" in r.text
    assert quarantined(ws, run_id)[sid].status == "pending"


# --- logins ------------------------------------------------------------------------------------


def login(c: TestClient, token: str, **form: str) -> Any:
    return c.post("/login", data={"token": token, **form}, follow_redirects=False)


def failed_logins(ws: Workspace) -> list[AuditRecord]:
    with ws.catalog.session() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.action == "review.login_failed")).all()
        s.expunge_all()
        return list(rows)


def test_five_wrong_tokens_then_429_until_the_window_passes(ws: Workspace) -> None:
    token = add_reviewer(ws.catalog, "ana")
    app = create_app(ws)
    clock = Clock()
    app.state.login_throttle = LoginThrottle(clock=clock)
    c = client(app)

    assert [login(c, f"srt_guess{i}").status_code for i in range(5)] == [401] * 5
    clock.now += 10
    refused = login(c, token)
    assert refused.status_code == 429, "the right token too is refused while the client is throttled"
    assert refused.headers["retry-after"] == "50"
    assert "too many failed logins" in refused.text
    other = client(app, address="10.0.0.2")
    assert login(other, "srt_guess").status_code == 401, "the throttle is per client address"

    clock.now += 50
    assert login(c, token).status_code == 303, "after the window the client may try again"


def test_a_successful_login_resets_its_client(ws: Workspace) -> None:
    token = add_reviewer(ws.catalog, "ana")
    app = create_app(ws)
    c = client(app)
    assert [login(c, "srt_guess").status_code for _ in range(4)] == [401] * 4
    assert login(c, token).status_code == 303
    assert [login(c, "srt_guess").status_code for _ in range(5)] == [401] * 5
    assert login(c, "srt_guess").status_code == 429


def test_every_failed_login_is_audited_without_the_token(ws: Workspace) -> None:
    add_reviewer(ws.catalog, "ana")
    c = client(create_app(ws), address="10.9.8.7")
    tried = ["srt_secret_guess_1", "srt_secret_guess_2", ""]
    for token in tried:
        assert login(c, token, reviewer="ana").status_code == 401
    assert login(c, "srt_secret_guess_3", reviewer="<b>bad name</b>").status_code == 401

    records = failed_logins(ws)
    assert len(records) == 4
    assert [r.detail for r in records] == [
        {"client": "10.9.8.7", "reviewer": "ana"},
        {"client": "10.9.8.7", "reviewer": "ana"},
        {"client": "10.9.8.7", "reviewer": "ana"},
        {"client": "10.9.8.7", "reviewer": None},
    ]
    assert {r.actor for r in records} == {"anonymous"} and {r.subject for r in records} == {"10.9.8.7"}
    text = repr([(r.actor, r.subject, r.detail) for r in records])
    assert "secret" not in text and "<b>" not in text


def test_the_throttle_counts_exactly_under_threads() -> None:
    throttle = LoginThrottle(failures=1_000_000, window_s=60)
    barrier = threading.Barrier(8)

    def fail_many(client_address: str) -> None:
        barrier.wait()
        for _ in range(500):
            assert throttle.admit(client_address) is None

    threads = [threading.Thread(target=fail_many, args=(f"10.0.0.{i % 2}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.failures_of("10.0.0.0") == throttle.failures_of("10.0.0.1") == 2000


def test_the_throttle_forgets_old_clients_so_memory_stays_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(failures=5, window_s=60, max_clients=100, clock=clock)
    for i in range(1000):
        throttle.admit(f"10.0.{i // 256}.{i % 256}")
    assert throttle.tracked() <= 100
    clock.now += 61
    throttle.admit("10.9.9.9")
    assert throttle.tracked() == 1
