"""The review web page through Starlette's TestClient, over a copy of one finished demo run."""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text, update
from typer.testing import CliRunner
from web_support import copy_of, demo_run, quarantined, tile_ids

from sanitize import cli
from sanitize.catalog import AuditRecord, Decision, QuarantineEntry, Reviewer, ReviewSession, Run
from sanitize.config import DetectConfig, Settings
from sanitize.review import decide
from sanitize.web.app import SESSION_COOKIE, create_app
from sanitize.web.auth import add_reviewer, revoke_reviewer
from sanitize.web.queries import QuarantineQuery, adjacent_entries, entry_of, quarantine_page
from sanitize.workspace import Workspace

HOSTILE = '<script>alert("x")</script>&"\''
LOCAL = "http://127.0.0.1:8765"  # the app answers loopback names only, not TestClient's "testserver"


@dataclass
class Site:
    ws: Workspace
    run_id: str
    client: TestClient
    token: str

    def login(self) -> str:
        """Log the client in; returns the session's CSRF token as the page hands it out."""
        r = self.client.post("/login", data={"token": self.token, "next": "/"}, follow_redirects=False)
        assert r.status_code == 303, r.text
        page = self.client.get("/").text
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert match, "a logged-in page carries the CSRF token"
        return match.group(1)

    def decide(self, csrf: str | None, action: str, ids: list[str], **form: str) -> object:
        data: dict[str, object] = {"action": action, "sample_id": ids, **form}
        if csrf is not None:
            data["csrf_token"] = csrf
        return self.client.post(f"/runs/{self.run_id}/decide", data=data, headers={"accept": "application/json"})

    def statuses(self) -> dict[str, str]:
        return {sid: e.status for sid, e in quarantined(self.ws, self.run_id).items()}


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Site:
    home, run_id = demo_run(tmp_path_factory)
    ws = copy_of(home, tmp_path / "home")
    token = add_reviewer(ws.catalog, "ana")
    return Site(ws, run_id, TestClient(create_app(ws), base_url=LOCAL), token)


# --- reading -----------------------------------------------------------------------------------


def test_every_page_reads_without_a_token_and_offers_no_decision(site: Site) -> None:
    sid = next(iter(site.statuses()))
    for url in (
        "/",
        f"/runs/{site.run_id}",
        f"/runs/{site.run_id}/quarantine",
        f"/runs/{site.run_id}/samples/{sid}",
        f"/runs/{site.run_id}/pictures",
    ):
        r = site.client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
        assert "read-only" in r.text and "log in" in r.text
        assert 'id="decide-form"' not in r.text and "csrf-token" not in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]

    refused = site.client.post(
        f"/runs/{site.run_id}/decide", data={"action": "confirm", "sample_id": [sid], "csrf_token": "x"}
    )
    assert refused.status_code == 401
    assert "log in with a reviewer token" in refused.text
    assert set(site.statuses().values()) == {"pending"}


def test_the_runs_page_shows_counts_figures_and_sources(site: Site) -> None:
    decide(site.ws, site.run_id, sorted(site.statuses())[:2], "confirm", reviewer="ben")
    page = site.client.get("/").text
    with site.ws.catalog.session() as s:
        summary = s.get(Run, site.run_id).summary  # type: ignore[union-attr]
    row = page[page.index(f'data-run="{site.run_id}"') :]
    counts = re.findall(r'<td class="n-(\w+)">(\d+)</td>', row)[:4]
    assert counts == [
        ("pending", str(summary["quarantined"] - 2)),
        ("confirmed", "2"),
        ("released", "0"),
        ("relabelled", "0"),
    ]
    assert f"<td>{summary['ingested']}</td><td>{summary['kept']}</td>" in row
    assert "recall 100.0%" in row and "sklearn-digits" in row
    run_page = site.client.get(f"/runs/{site.run_id}").text
    assert "No source holds more of the quarantine than its size predicts" in run_page
    assert f"<td>{summary['per_source']['sklearn-digits']['samples']}</td>" in run_page


def test_the_quarantine_pages_in_sql_order_with_filters(site: Site) -> None:
    url = f"/runs/{site.run_id}/quarantine"
    entries = quarantined(site.ws, site.run_id)
    expected = [e.sample_id for e in sorted(entries.values(), key=lambda e: (e.label, -e.suspicion_score, e.id))]

    first = site.client.get(url, params={"per_page": 10})
    second = site.client.get(url, params={"per_page": 10, "page": 2})
    assert tile_ids(first.text) == expected[:10]
    assert tile_ids(second.text) == expected[10:20]
    assert f'page <span id="page-no">1</span> of {-(-len(expected) // 10)}' in first.text

    ascending = site.client.get(url, params={"per_page": 1000, "sort": "score_asc", "group": "none"})
    scores = [entries[s].suspicion_score for s in tile_ids(ascending.text)]
    assert scores == sorted(scores) and len(scores) == len(expected)

    decide(site.ws, site.run_id, expected[:3], "confirm", reviewer="ben")
    confirmed = site.client.get(url, params={"status": "confirmed"})
    assert sorted(tile_ids(confirmed.text)) == sorted(expected[:3])
    pending = site.client.get(url, params={"status": "pending", "per_page": 1000})
    assert set(tile_ids(pending.text)) == set(expected[3:])

    by_detector = site.client.get(url, params={"detector": "spectral", "per_page": 1000})
    assert set(tile_ids(by_detector.text)) == {s for s, e in entries.items() if "spectral" in e.detectors.split(",")}
    label = entries[expected[0]].label
    by_class = site.client.get(url, params={"label": label, "source": "sklearn-digits", "per_page": 1000})
    assert set(tile_ids(by_class.text)) == {s for s, e in entries.items() if e.label == label}
    nothing = site.client.get(url, params={"source": "nobody"})
    assert tile_ids(nothing.text) == [] and "Nothing matches this selection." in nothing.text


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"page": "two"}, 400, "page must be a whole number, not 'two'"),
        ({"per_page": "0"}, 400, "per_page must be between 1 and 1000, not 0"),
        ({"status": "deleted"}, 400, "unknown status 'deleted'"),
        ({"sort": "random"}, 400, "unknown sort 'random'"),
        ({"detector": "magic"}, 400, "unknown detector 'magic'"),
        ({"label": "x"}, 400, "label must be a whole number"),
        ({"page": "999"}, 404, "page 999 is past the last page"),
    ],
)
def test_bad_quarantine_parameters_are_named(site: Site, params: dict[str, str], status: int, message: str) -> None:
    r = site.client.get(f"/runs/{site.run_id}/quarantine", params=params)
    assert r.status_code == status
    assert message in r.text


def test_previous_and_next_walk_the_quarantine_in_page_order(site: Site) -> None:
    q = QuarantineQuery(sort="score_asc")
    order = [
        e.sample_id
        for e in quarantine_page(site.ws, site.run_id, QuarantineQuery(sort="score_asc", per_page=1000)).entries
    ]
    walked = [order[0]]
    while True:
        entry = entry_of(site.ws, site.run_id, walked[-1])
        assert entry is not None
        before, after = adjacent_entries(site.ws, site.run_id, entry, q)
        assert before == (walked[-2] if len(walked) > 1 else None)
        if after is None:
            break
        walked.append(after)
    assert walked == order


def test_a_sample_page_shows_provenance_detectors_and_kept_neighbours(site: Site) -> None:
    entries = quarantined(site.ws, site.run_id)
    sid, entry = max(entries.items(), key=lambda kv: kv[1].suspicion_score)
    page = site.client.get(f"/runs/{site.run_id}/samples/{sid}").text

    assert entry.content_sha256 in page and html.escape(entry.locator) in page
    assert f'<b id="given-label">{entry.label}</b>' in page
    names = DetectConfig().detectors
    for name in names:
        assert f"<td>{name}" in page
    assert page.count('class="marker"') == len(names)  # this sample on each detector's class histogram
    neighbours = re.findall(r'<div class="tile[^"]*" data-sample="([0-9a-f]{20})"', page)
    assert len(neighbours) == 8
    assert not set(neighbours) & set(entries), "neighbours come from the kept set"
    kept = next(iter(set(neighbours)))
    kept_page = site.client.get(f"/runs/{site.run_id}/samples/{kept}")
    assert kept_page.status_code == 200 and "kept by the run (not quarantined)" in kept_page.text


def test_pictures_are_inline_svg(site: Site) -> None:
    page = site.client.get(f"/runs/{site.run_id}/pictures").text
    voters = len(DetectConfig().voters)
    assert page.count("<svg") == 10 * voters + 2  # a histogram per class and voter, the sources' bars, the projection
    n_quarantined = len(site.statuses())
    assert f"pending ({n_quarantined})" in page
    assert page.count("<circle") >= 1437  # every training sample of the demo is drawn, plus the legend


# --- images ------------------------------------------------------------------------------------


def test_images_are_png_by_sample_id_and_cached(site: Site) -> None:
    sid = next(iter(site.statuses()))
    r = site.client.get(f"/img/{sid}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    assert "immutable" in r.headers["cache-control"]
    again = site.client.get(f"/img/{sid}", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "url",
    [
        "/img/zzz",
        "/img/0123456789abcdef0123",  # well-formed, but no such sample
        "/img/..%2F..%2Fcatalog.db",
        "/img/%2e%2e%2fcatalog.db",
        "/static/..%2Fcatalog.db",
        "/static/../../catalog.db",
        "/runs/{run}/samples/..%2F..%2Fcatalog.db",
        "/runs/{run}/samples/0123456789abcdef0123",
        "/runs/no-such-run/quarantine",
    ],
)
def test_bad_ids_and_paths_are_404(site: Site, url: str) -> None:
    r = site.client.get(url.format(run=site.run_id))
    assert r.status_code == 404
    assert b"SQLite" not in r.content


# --- who may decide ----------------------------------------------------------------------------


def test_login_sets_a_strict_http_only_cookie(site: Site) -> None:
    wrong = site.client.post("/login", data={"token": "srt_guess"}, follow_redirects=False)
    assert wrong.status_code == 401 and "unknown or revoked reviewer token" in wrong.text
    r = site.client.post("/login", data={"token": site.token, "next": "/runs"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/runs"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    value = cookie.split(";")[0].split("=", 1)[1]
    with site.ws.catalog.session() as s:
        stored = s.scalars(select(ReviewSession.id_sha256)).all()
        hashes = s.scalars(select(Reviewer.token_sha256)).all()
    assert value not in stored and len(stored) == 1, "only the cookie's hash is stored"
    assert site.token not in hashes
    assert 'reviewer <b id="reviewer">ana</b>' in site.client.get("/").text


def test_login_refuses_a_redirect_off_the_site(site: Site) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "\\\\evil"):
        r = site.client.post("/login", data={"token": site.token, "next": target}, follow_redirects=False)
        assert r.headers["location"] == "/"


def test_a_decision_by_post_is_recorded_with_reviewer_note_and_audit(site: Site) -> None:
    csrf = site.login()
    ids = sorted(site.statuses())[:2]

    r = site.decide(csrf, "confirm", ids, note="patch in the corner")
    again = site.decide(csrf, "confirm", ids)

    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{"sample_id": s, "status": "confirmed", "changed": True} for s in ids]
    assert [x["changed"] for x in again.json()["results"]] == [False, False]
    with site.ws.catalog.session() as s:
        decisions = s.execute(select(Decision.reviewer, Decision.note, Decision.action)).all()
        audits = s.scalars(select(AuditRecord.actor).where(AuditRecord.action == "quarantine.confirm")).all()
    assert decisions == [("ana", "patch in the corner", "confirm")] * 2
    assert audits == ["ana", "ana"]
    assert [site.statuses()[s] for s in ids] == ["confirmed", "confirmed"]


def test_a_form_post_without_javascript_redirects_back(site: Site) -> None:
    csrf = site.login()
    sid = sorted(site.statuses())[0]
    back = f"/runs/{site.run_id}/quarantine?status=pending"
    r = site.client.post(
        f"/runs/{site.run_id}/decide",
        data={"csrf_token": csrf, "action": "release", "sample_id": sid, "next": back},
        headers={"accept": "text/html"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == back
    assert site.statuses()[sid] == "released"


def test_mutating_requests_need_the_sessions_csrf_token(site: Site) -> None:
    csrf = site.login()
    sid = sorted(site.statuses())[0]

    missing = site.decide(None, "confirm", [sid])
    wrong = site.decide(csrf[:-2] + "xx", "confirm", [sid])
    cross_site = site.client.post(
        f"/runs/{site.run_id}/decide",
        data={"csrf_token": csrf, "action": "confirm", "sample_id": sid},
        headers={"origin": "http://evil.example"},
    )
    logout = site.client.post("/logout", data={"csrf_token": "nope"})

    assert missing.status_code == wrong.status_code == 403
    assert "CSRF token" in wrong.text
    assert cross_site.status_code == 403 and "cross-site" in cross_site.text
    assert logout.status_code == 403
    assert site.statuses()[sid] == "pending"


def test_another_sessions_csrf_token_does_not_work(site: Site) -> None:
    theirs = site.login()
    other = TestClient(site.client.app, base_url=LOCAL)
    mine = Site(site.ws, site.run_id, other, add_reviewer(site.ws.catalog, "ben")).login()
    assert mine != theirs
    r = Site(site.ws, site.run_id, other, "").decide(theirs, "confirm", sorted(site.statuses())[:1])
    assert r.status_code == 403


def test_a_conflicting_decision_is_a_409_with_the_reason(site: Site) -> None:
    csrf = site.login()
    ids = sorted(site.statuses())
    decide(site.ws, site.run_id, [ids[0]], "confirm", reviewer="ben")

    r = site.decide(csrf, "release", [ids[1], ids[0]])

    assert r.status_code == 409
    assert r.text == f"conflict: sample {ids[0]} was already confirmed; refusing to release it"
    assert (site.statuses()[ids[0]], site.statuses()[ids[1]]) == ("confirmed", "pending")
    as_page = site.client.post(
        f"/runs/{site.run_id}/decide",
        data={"csrf_token": csrf, "action": "release", "sample_id": ids[0]},
        headers={"accept": "text/html"},
    )
    assert as_page.status_code == 409 and "already confirmed" in as_page.text and "<html" in as_page.text


def test_relabel_needs_a_class_of_the_dataset(site: Site) -> None:
    csrf = site.login()
    sid = sorted(site.statuses())[0]

    no_label = site.decide(csrf, "relabel", [sid])
    not_a_class = site.decide(csrf, "relabel", [sid], new_label="42")
    bad_action = site.decide(csrf, "delete", [sid])
    bad_id = site.decide(csrf, "confirm", ["../../etc"])
    ok = site.decide(csrf, "relabel", [sid], new_label="3")

    assert no_label.status_code == 400 and "relabel needs the class" in no_label.text
    assert not_a_class.status_code == 400 and "class 42 is not a class of this dataset" in not_a_class.text
    assert bad_action.status_code == 400 and "unknown decision 'delete'" in bad_action.text
    assert bad_id.status_code == 404
    assert ok.status_code == 200
    entry = quarantined(site.ws, site.run_id)[sid]
    assert (entry.status, entry.new_label) == ("relabelled", 3)


def test_the_last_decision_reports_the_approved_version(site: Site) -> None:
    csrf = site.login()
    ids = sorted(site.statuses())
    first = site.decide(csrf, "confirm", ids[:-1])
    last = site.decide(csrf, "release", ids[-1:])
    assert first.json()["approved_version"] is None
    assert last.json()["approved_version"] is not None
    assert f"<code>{last.json()['approved_version']}</code> approved" in site.client.get("/").text


def test_revoking_a_reviewer_ends_their_session(site: Site) -> None:
    csrf = site.login()
    revoke_reviewer(site.ws.catalog, "ana")
    r = site.decide(csrf, "confirm", sorted(site.statuses())[:1])
    assert r.status_code == 401
    again = site.client.post("/login", data={"token": site.token}, follow_redirects=False)
    assert again.status_code == 401


def test_logout_ends_the_session(site: Site) -> None:
    csrf = site.login()
    r = site.client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert site.decide(csrf, "confirm", sorted(site.statuses())[:1]).status_code == 401


# --- escaping ----------------------------------------------------------------------------------


def test_hostile_notes_and_source_names_are_escaped(site: Site) -> None:
    csrf = site.login()
    sid = sorted(site.statuses())[0]
    with site.ws.catalog.session() as s:
        s.execute(update(QuarantineEntry).where(QuarantineEntry.sample_id == sid).values(source=HOSTILE))
        run = s.get(Run, site.run_id)
        assert run is not None and run.summary is not None
        summary = dict(run.summary)
        summary["per_source"] = {HOSTILE: summary["per_source"]["sklearn-digits"] | {"source": HOSTILE}}
        summary["suspicious_sources"] = [HOSTILE]
        run.summary = summary
    assert site.decide(csrf, "confirm", [sid], note=HOSTILE).status_code == 200

    pages = {
        "runs": site.client.get("/").text,
        "run": site.client.get(f"/runs/{site.run_id}").text,
        "quarantine": site.client.get(f"/runs/{site.run_id}/quarantine").text,
        "sample": site.client.get(f"/runs/{site.run_id}/samples/{sid}").text,
        "pictures": site.client.get(f"/runs/{site.run_id}/pictures").text,
    }
    for name, page in pages.items():
        assert "<script>alert" not in page, name
        assert 'alert("x")' not in page, name
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#34;&#39;"
    assert escaped in pages["sample"]  # the note
    assert escaped in pages["quarantine"] and escaped in pages["runs"] and escaped in pages["run"]
    assert "&lt;script&gt;" in pages["pictures"]  # the SVG's source label


# --- the catalog under the page ----------------------------------------------------------------


def test_a_catalog_made_before_the_review_index_gets_it_when_opened(tmp_path: Path) -> None:
    made = Workspace(Settings(home=tmp_path, catalog_url=None))
    with made.catalog.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_quarantine_review"))  # as a catalog made before the index was
    assert not inspect(made.catalog.engine).has_index("quarantine", "ix_quarantine_review")
    made.catalog.dispose()

    reopened = Workspace(Settings(home=tmp_path, catalog_url=None)).catalog  # any user, not only the page

    assert inspect(reopened.engine).has_index("quarantine", "ix_quarantine_review")


# --- the command line --------------------------------------------------------------------------


def test_reviewer_commands_print_the_token_once_and_store_its_hash(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANITIZE_HOME", str(site.ws.settings.home))
    runner = CliRunner()

    added = runner.invoke(cli.app, ["reviewer", "add", "cleo"])
    twice = runner.invoke(cli.app, ["reviewer", "add", "cleo"])
    bad = runner.invoke(cli.app, ["reviewer", "add", "<b>"])
    listed = runner.invoke(cli.app, ["reviewer", "list"])
    revoked = runner.invoke(cli.app, ["reviewer", "revoke", "cleo"])

    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("srt_") and len(token) > 40
    assert twice.exit_code != 0 and "already exists" in str(twice.exception)
    assert bad.exit_code != 0 and "bad reviewer name" in str(bad.exception)
    assert "cleo" in listed.stdout and "active" in listed.stdout
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    with site.ws.catalog.session() as s:
        row = s.get(Reviewer, "cleo")
        assert row is not None and row.revoked_at is not None and token not in row.token_sha256
    r = site.client.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 401


def test_sanitize_review_serves_the_page_and_prints_its_url(site: Site) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SANITIZE_HOME": str(site.ws.settings.home), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sanitize.cli", "review", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "sanitize review did not start"
                time.sleep(0.2)
        assert site.run_id in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"review page: http://127.0.0.1:{port}/" in out


def test_a_running_runs_page_shows_its_stage_and_training_progress(site: Site) -> None:
    """Issue 16: the run page of a running run says which stage runs, since when, and how far it is."""
    import json

    with site.ws.catalog.session() as s:
        s.get(Run, site.run_id).status = "running"  # type: ignore[union-attr]
    path = site.ws.store.run_dir(site.run_id) / "context.json"
    ctx = json.loads(path.read_text())
    ctx.update(
        stage="train_reference",
        stage_started_at="2026-12-01T10:00:00+00:00",
        stage_progress="train: epoch 8/40, loss 0.2100, 4 s so far, about 16 s left",
    )
    path.write_text(json.dumps(ctx))
    page = site.client.get(f"/runs/{site.run_id}").text
    assert "Running: stage <b>train reference</b> since 2026-12-01 10:00:00 UTC" in page
    assert "epoch 8/40" in page and "about 16 s left" in page
