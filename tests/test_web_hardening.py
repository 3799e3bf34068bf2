"""The review server against a hostile client: foreign Host headers (DNS rebinding), integers too
large for the catalog, and guessing reviewer tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from web_support import copy_of, demo_run, quarantined

from sanitize.web.app import create_app
from sanitize.web.auth import add_reviewer
from sanitize.workspace import Workspace

HUGE = "99999999999999999999999"


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Workspace, str]:
    home, run_id = demo_run(tmp_path_factory)
    return copy_of(home, tmp_path / "demo"), run_id


def client(app: FastAPI, host: str = "127.0.0.1:8765", address: str = "10.0.0.1") -> TestClient:
    return TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False, client=(address, 50000))


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
