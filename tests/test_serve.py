"""A real ``prefect server start`` on a free loopback port, and a schedule registered on it as a deployment.

About 20-40 s on a loaded 2-core machine (most of it the server's start). Skip with
``SANITIZE_SKIP_SERVER_TESTS=1``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sanitize.config import ModelConfig, RunConfig
from sanitize.errors import SanitizeError
from sanitize.schedule import ScheduleSpec

pytestmark = pytest.mark.skipif(
    os.environ.get("SANITIZE_SKIP_SERVER_TESTS") == "1", reason="SANITIZE_SKIP_SERVER_TESTS=1: no Prefect server"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(sanitize_home: Path) -> Iterator[object]:
    from flows.serve import start_server

    started = start_server(sanitize_home, port=free_port())
    yield started
    started.stop()


def test_a_schedule_becomes_a_deployment_on_a_real_prefect_server(server: object, sanitize_home: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.serve import PrefectServer, deployment_for, server_healthy, start_server, using_server

    assert isinstance(server, PrefectServer) and server.started_here
    assert server_healthy(server.api_url)
    assert (sanitize_home / "prefect" / "server.log").is_file() and (sanitize_home / "prefect" / "prefect.db").is_file()
    # A second start finds the healthy server and uses it.
    port = int(server.api_url.rsplit(":", 1)[1].removesuffix("/api"))
    again = start_server(sanitize_home, port=port)
    assert again.api_url == server.api_url and not again.started_here

    config = RunConfig(dataset="shop", model=ModelConfig(epochs=3))
    spec = ScheduleSpec(dataset="shop", cron="0 3 * * *", config=config)
    with using_server(server):
        deployment_id = deployment_for(spec).apply()
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployment_id)
            flow = client.read_flow(deployment.flow_id)

    assert (flow.name, deployment.name) == ("sanitize-scheduled-clean", "shop")
    assert deployment.entrypoint == "flows.scheduled.scheduled_cleaning_flow"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]  # type: ignore[union-attr]
    assert RunConfig.model_validate(deployment.parameters["config"]) == config
    assert "PREFECT_API_URL" not in os.environ or os.environ["PREFECT_API_URL"] != server.api_url

    # Run now: a flow run of the deployment, due at once, for the process that serves it to pick up.
    from flows.cli import PrefectOrchestration
    from sanitize.workspace import Workspace

    started = PrefectOrchestration().trigger(Workspace(), spec, port=port, here=False)
    assert started["where"] == "server" and started["served"] is False  # nothing polls for it in this test
    assert started["url"] == f"{server.ui_url}/runs/flow-run/{started['flow_run_id']}"
    with using_server(server), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(started["flow_run_id"])
    assert flow_run.deployment_id == deployment_id and "run-now" in flow_run.tags
    assert flow_run.state is not None and flow_run.state.is_scheduled()
    assert RunConfig.model_validate(flow_run.parameters["config"]) == config

    server.stop()
    assert not server_healthy(server.api_url)


def test_a_port_held_by_something_else_is_refused(sanitize_home: Path) -> None:
    from flows.serve import start_server

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(SanitizeError, match=f"127.0.0.1:{port} is in use by something that is not"):
            start_server(sanitize_home, port=port, timeout=5)
