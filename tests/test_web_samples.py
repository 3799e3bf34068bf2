"""Every sample of a run on the review page: browsing, sending by hand and undoing, finding more like
a sample, the trigger as a picture and the explorable projection (TestClient, one demo run)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_web import LOCAL, Site
from web_support import copy_of, demo_run, quarantined

from sanitize.web.app import create_app
from sanitize.web.auth import add_reviewer
from sanitize.web.data import RunData
from sanitize.web.index import SampleQuery, run_index
from sanitize.web.similar import contrast, similar

TILE = re.compile(r'<div class="tile status-(\w+)" data-sample="([0-9a-f]{20})"')


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Site:
    home, run_id = demo_run(tmp_path_factory)
    ws = copy_of(home, tmp_path / "home")
    token = add_reviewer(ws.catalog, "ana")
    return Site(ws, run_id, TestClient(create_app(ws), base_url=LOCAL), token)


def verdict(site: Site) -> dict[str, np.ndarray]:
    t = pq.read_table(site.ws.store.run_dir(site.run_id) / "verdict.parquet")
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def tiles(html: str) -> list[tuple[str, str]]:
    """(sample id, status) of a grid's tiles, in page order."""
    return [(sid, status) for status, sid in TILE.findall(html)]


def test_the_run_lists_every_training_sample_sorted_by_any_detector(site: Site) -> None:
    v = verdict(site)
    url = f"/runs/{site.run_id}/samples"
    first, second = (site.client.get(url, params={"per_page": 1000, "page": p}).text for p in (1, 2))
    listed = [sid for sid, _ in tiles(first) + tiles(second)]
    assert sorted(listed) == sorted(v["sample_id"].tolist()) and len(listed) == len(set(listed))
    assert 'page <span id="page-no">1</span> of 2' in first
    statuses = dict(tiles(first) + tiles(second))
    flagged = set(v["sample_id"][v["quarantine"]].tolist())
    assert {s for s, st in statuses.items() if st == "pending"} == flagged
    assert {s for s, st in statuses.items() if st == "kept"} == set(v["sample_id"].tolist()) - flagged

    by_knn = site.client.get(url, params={"detector": "knn", "sort": "score_desc", "per_page": 50, "page": 3}).text
    expected = v["sample_id"][np.argsort(-v["knn_score"], kind="stable")][100:150].tolist()
    assert [s for s, _ in tiles(by_knn)] == expected
    by_rank = site.client.get(url, params={"detector": "spectral", "sort": "rank_asc", "max_rank": 1}).text
    label_of = dict(zip(v["sample_id"].tolist(), v["label"].tolist(), strict=True))
    firsts = [s for s, _ in tiles(by_rank)]
    assert sorted(label_of[s] for s in firsts) == list(range(10)), "rank 1 of each class"
    assert all(v["spectral_rank"][v["sample_id"] == s][0] == 1 for s in firsts)


def test_filters_combine_and_bad_ones_are_named(site: Site) -> None:
    v = verdict(site)
    url = f"/runs/{site.run_id}/samples"
    target = int(np.bincount(v["label"][v["quarantine"]]).argmax())
    got = site.client.get(url, params={"label": target, "verdict": "quarantine", "per_page": 1000}).text
    want = v["sample_id"][(v["label"] == target) & v["quarantine"]]
    assert sorted(s for s, _ in tiles(got)) == sorted(want.tolist())
    kept = site.client.get(url, params={"status": "kept", "source": "sklearn-digits", "per_page": 1000}).text
    assert f'<span id="match-count">{int((~v["quarantine"]).sum())} matching</span>' in kept
    assert {st for _, st in tiles(kept)} == {"kept"}
    high = site.client.get(url, params={"detector": "knn", "min_score": "0.5", "flagged": "no", "per_page": 1000})
    want = v["sample_id"][(v["knn_score"] >= 0.5) & ~v["knn_flag"]]
    assert sorted(s for s, _ in tiles(high.text)) == sorted(want.tolist())
    for params, message in (
        ({"detector": "magic"}, "unknown detector 'magic'"),
        ({"sort": "rank_asc"}, "the suspicion score has no rank"),
        ({"status": "gone"}, "unknown status 'gone'"),
        ({"min_score": "nan"}, "min_score must be a finite number"),
        ({"source": "nobody"}, "unknown source 'nobody'; this run's are sklearn-digits"),
        ({"label": "99"}, "label 99 is not a class of this run"),
        ({"x0": "1"}, "needs all of x0, x1, y0 and y1"),
    ):
        r = site.client.get(url, params=params)
        assert r.status_code == 400 and message in r.text, (params, r.text[:200])
    past = site.client.get(url, params={"page": 99})
    assert past.status_code == 404 and "page 99 is past the last page (8)" in past.text
    assert site.client.get("/runs/nope/samples").status_code == 404


def test_send_by_hand_and_undo_over_http_answer_the_new_counts(site: Site) -> None:
    v = verdict(site)
    kept = v["sample_id"][~v["quarantine"]][0]
    n = int(v["quarantine"].sum())
    url = f"/runs/{site.run_id}/by-hand"
    assert site.client.post(url, data={"sample_id": [kept], "csrf_token": "x"}).status_code == 401
    csrf = site.login()
    answer = site.client.post(
        url, data={"sample_id": [kept], "note": "patch", "csrf_token": csrf}, headers={"accept": "application/json"}
    ).json()
    assert answer["results"] == [{"sample_id": kept, "status": "pending", "changed": True}]
    assert answer["counts"] == {"pending": n + 1} and answer["quarantined"] == n + 1
    assert quarantined(site.ws, site.run_id)[kept].reason == "sent to the quarantine by hand by ana: patch"

    decided = site.decide(csrf, "confirm", [kept]).json()  # type: ignore[attr-defined]
    assert decided["counts"] == {"pending": n, "confirmed": 1}, "the decision's answer carries the header's counts"
    undo = site.client.post(
        f"/runs/{site.run_id}/undo",
        data={"sample_id": [kept], "csrf_token": csrf},
        headers={"accept": "application/json"},
    ).json()
    assert undo["results"][0]["status"] == "pending" and undo["counts"] == {"pending": n + 1}
    page = site.client.get(f"/runs/{site.run_id}/samples/{kept}").text
    assert "undo" in page and "by_hand" in page
    bad = site.client.post(url, data={"sample_id": ["0123456789abcdef0123"], "csrf_token": csrf})
    assert bad.status_code == 404 and "sample 0123456789abcdef0123 is not a training sample of run" in bad.text

    # Once every entry is decided the version is approved, and an undo is refused with the reason.
    site.decide(csrf, "confirm", list(quarantined(site.ws, site.run_id)))
    closed = site.client.post(f"/runs/{site.run_id}/undo", data={"sample_id": [kept], "csrf_token": csrf})
    assert closed.status_code == 409 and "is approved: its decisions are final" in closed.text


def test_more_like_this_in_feature_and_input_space(site: Site) -> None:
    v = verdict(site)
    poison = v["sample_id"][v["quarantine"]][0]
    data = RunData(site.ws, site.run_id)
    for space in ("features", "pixels"):
        page = site.client.get(f"/runs/{site.run_id}/similar", params={"sample_id": poison, "space": space, "k": 20})
        assert page.status_code == 200, page.text[:300]
        grid = page.text[page.text.index('id="grid"') :]
        found = [s for s, _ in tiles(grid)]
        assert len(found) == 20 and poison not in found
        assert found == [data.sample_ids[n.row] for n in similar(site.ws, data, [data.row(poison)], space, 20)]
    # The planted patch makes a poison's nearest pixels other poisons.
    near = similar(site.ws, data, [data.row(poison)], "pixels", 10)
    assert sum(bool(data.quarantined[n.row]) for n in near) >= 8
    both = site.client.get(
        f"/runs/{site.run_id}/similar", params={"sample_id": [poison, v["sample_id"][1]], "space": "pixels"}
    )
    assert both.status_code == 200 and "More like 2 samples" in both.text
    for params, message in (
        ({"sample_id": poison, "space": "colour"}, "unknown space 'colour'"),
        ({"sample_id": "0123456789abcdef0123"}, "not a training sample of run"),
        ({}, "choose a sample (sample_id)"),
        ({"sample_id": poison, "k": "0"}, "k must be between 1 and 500"),
    ):
        r = site.client.get(f"/runs/{site.run_id}/similar", params=params)
        assert r.status_code in (400, 404) and message in r.text, (params, r.text[:200])


def test_the_trigger_of_the_poisoned_class_is_the_planted_patch(site: Site) -> None:
    v = verdict(site)
    target = int(np.bincount(v["label"][v["quarantine"]]).argmax())
    page = site.client.get(f"/runs/{site.run_id}/trigger").text
    assert f"class {target}: the verdict" in page and page.count('class="trigger-picture"') >= 3
    data = RunData(site.ws, site.run_id)
    rows = run_index(site.ws, data).rows_of(SampleQuery(label=target, verdict="quarantine"))
    c = contrast(site.ws, data, site.client.app.state.samples, rows)  # type: ignore[attr-defined]
    # BadNets' 3x3 white patch sits in the bottom-right corner of the 8x8 digits.
    corner = np.zeros(c.constancy.shape, dtype=bool)
    corner[-3:, -3:] = True
    assert c.group_mean[..., 0][corner].min() > 200, "white where the patch is"
    assert (c.difference[..., 0][corner] > 0).all()
    most_constant = np.argsort(c.constancy, axis=None)[::-1][:5]
    assert corner.ravel()[most_constant].all(), c.constancy.round(2)
    assert c.constancy[corner].mean() > 0.5 > 5 * c.constancy[~corner].mean()
    for kind in ("mean", "difference", "constancy"):
        r = site.client.get(
            f"/runs/{site.run_id}/trigger.png", params={"label": target, "verdict": "quarantine", "kind": kind}
        )
        assert r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (320, 320), "rendered large"
    selected = site.client.get(f"/runs/{site.run_id}/trigger", params={"detector": "knn", "max_rank": 5})
    assert "the selected samples" in selected.text and "50 samples" in selected.text
    whole = site.client.get(f"/runs/{site.run_id}/trigger", params={"label": target})
    assert "the group is the whole of its classes" in whole.text
    bad = site.client.get(f"/runs/{site.run_id}/trigger.png", params={"label": target, "kind": "x"})
    assert bad.status_code == 400 and "unknown picture 'x'" in bad.text


def test_the_projection_colours_by_status_class_or_source_and_selects_a_rectangle(site: Site) -> None:
    for colour, legend in (("status", "pending ("), ("class", "9 ("), ("source", "sklearn-digits (1437)")):
        page = site.client.get(f"/runs/{site.run_id}/pictures", params={"colour": colour}).text
        assert legend in page and 'id="projection-chart"' in page and "data-range=" in page
    assert site.client.get(f"/runs/{site.run_id}/pictures", params={"colour": "mood"}).status_code == 400
    data = RunData(site.ws, site.run_id)
    xy = data.projection()
    box = {"x0": 0.0, "x1": float(xy[:, 0].max()), "y0": 0.0, "y1": float(xy[:, 1].max())}
    inside = (xy[:, 0] >= 0) & (xy[:, 1] >= 0)
    page = site.client.get(f"/runs/{site.run_id}/samples", params={**box, "per_page": 1000}).text
    assert sorted(s for s, _ in tiles(page)) == sorted(np.array(data.sample_ids)[inside].tolist())
    assert 'id="rectangle"' in page
