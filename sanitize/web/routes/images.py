"""A sample's picture as PNG, by sample id (full size, or a thumbnail with ``?thumb=1``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from sanitize.web.data import check_sample_id
from sanitize.web.views import SamplesDep

router = APIRouter()


@router.get("/img/{sample_id}")
def image(
    request: Request, sample_id: str, samples: SamplesDep, thumb: Annotated[int, Query(ge=0, le=1)] = 0
) -> Response:
    check_sample_id(sample_id)
    # A sample id hashes the sample's content, so its picture never changes: cache it for good.
    etag = f'"{sample_id}{"-t" if thumb else ""}"'
    headers = {"Cache-Control": "private, max-age=31536000, immutable", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(samples.png(sample_id, thumbnail=bool(thumb)), media_type="image/png", headers=headers)
