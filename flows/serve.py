"""Serving: a local Prefect server, a deployment per scheduled dataset, the review page beside them.

Prefect's ephemeral mode (what ``sanitize run --prefect`` uses) has no scheduler, so schedules
need a real server: :func:`start_server` connects to a healthy one at the address or starts
``prefect server start`` on loopback, with its database under ``SANITIZE_HOME/prefect``.
:func:`serve_schedules` registers one deployment of :func:`flows.scheduled.scheduled_cleaning_flow`
per schedule and runs the flow runs the server's scheduler creates, until interrupted.
:func:`start_review_page` serves the review web page in a thread of this process (``sanitize up``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import uvicorn
from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import DeploymentStatus, FlowRun
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.types.entrypoint import EntrypointType

from flows import make_prefect_home
from flows.scheduled import scheduled_cleaning_flow
from sanitize.errors import SanitizeError
from sanitize.schedule import ScheduleSpec
from sanitize.web.app import create_app
from sanitize.workspace import Workspace

make_prefect_home()

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


def server_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers ``GET /health`` with ``true`` at ``api_url`` (``http://HOST:PORT/api``)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read() or b"null") is True
    except (OSError, ValueError):
        return False


def port_taken(host: str, port: int) -> bool:
    """Whether something accepts connections at ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@dataclass
class PrefectServer:
    """A Prefect server: one this process started (``process`` set) or one that was already running."""

    api_url: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server if this process started it; a server found running is left alone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_server(
    home: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 180.0
) -> PrefectServer:
    """Connect to the healthy Prefect server at ``host:port``, or start one there and wait until it is.

    The server started here keeps its database and log in ``home/prefect``; analytics are off.
    """
    api_url = f"http://{host}:{port}/api"
    if server_healthy(api_url):
        return PrefectServer(api_url)
    if port_taken(host, port):
        raise SanitizeError(f"{host}:{port} is in use by something that is not a healthy Prefect server; use --port")
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    log = prefect_home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api_url,
    }
    env.pop("PREFECT_API_URL", None)  # the server is the API; it must not look for another one
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the server through stop(), after the runner stops
        )
    server = PrefectServer(api_url, process, log)
    deadline = time.monotonic() + timeout
    while not server_healthy(api_url):
        if process.poll() is not None:
            raise SanitizeError(
                f"prefect server exited with status {process.returncode} before it was healthy; "
                f"last lines of {log}:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise SanitizeError(f"prefect server at {api_url} not healthy after {timeout:.0f} s; see {log}")
        time.sleep(0.5)
    return server


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def using_server(server: PrefectServer) -> Iterator[None]:
    """Point Prefect in this process (and the flow-run processes it starts) at ``server``."""
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def deployment_for(spec: ScheduleSpec) -> RunnerDeployment:
    """The Prefect deployment of a dataset's schedule: named after the dataset, its config as parameter."""
    deployment = scheduled_cleaning_flow.to_deployment(
        name=spec.dataset,
        cron=spec.cron,
        interval=spec.interval_seconds,
        parameters={"config": spec.config.model_dump(mode="json")},
        description=f"Scheduled cleaning of {spec.dataset}: {spec.describe()}",
        tags=["sanitize", spec.dataset],
        # By module, not file: the flow-run process imports the installed package from any folder.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    # Called outside an event loop, Prefect's sync-or-async method returns the value itself.
    return cast(RunnerDeployment, deployment)


def trigger_deployment(server: PrefectServer, spec: ScheduleSpec) -> FlowRun | None:
    """A flow run of ``spec``'s deployment on ``server``, due now, with the schedule's configuration as
    the catalog holds it; None when the server has no such deployment (nothing ever served it).

    The process that serves the deployment (``sanitize schedule`` or ``sanitize up``) picks it up.
    """
    with using_server(server), get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{scheduled_cleaning_flow.name}/{spec.dataset}")
        except ObjectNotFound:
            return None
        return client.create_flow_run_from_deployment(
            deployment.id, parameters={"config": spec.config.model_dump(mode="json")}, tags=["sanitize", "run-now"]
        )


def deployment_served(server: PrefectServer, spec: ScheduleSpec) -> bool:
    """Whether a process serves ``spec``'s deployment now (Prefect marks it ready while one polls)."""
    with using_server(server), get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{scheduled_cleaning_flow.name}/{spec.dataset}")
        except ObjectNotFound:
            return False
        return deployment.status == DeploymentStatus.READY


def serve_schedules(specs: list[ScheduleSpec], server: PrefectServer) -> None:
    """Register the schedules' deployments on ``server`` and run their flow runs until interrupted."""
    if not specs:
        raise SanitizeError("no schedule to serve; add one with: sanitize schedule --dataset NAME --cron '0 3 * * *'")
    # Flow-run processes find the data by this path, whatever folder they start in.
    os.environ["SANITIZE_HOME"] = str(Path(os.environ.get("SANITIZE_HOME", "data")).resolve())
    with using_server(server):
        serve(*[deployment_for(spec) for spec in specs], print_starting_message=False)


def start_review_page(ws: Workspace, port: int) -> str:
    """Start the review page (``sanitize review``) on 127.0.0.1 in a background thread; say where it is."""
    if port_taken(DEFAULT_HOST, port):
        raise SanitizeError(f"{DEFAULT_HOST}:{port} is in use; pick the review page's port with --review-port")
    server = uvicorn.Server(uvicorn.Config(create_app(ws), host=DEFAULT_HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="review-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SanitizeError(f"the review page did not start on {DEFAULT_HOST}:{port}")
        time.sleep(0.1)
    return f"http://{DEFAULT_HOST}:{port}/ (decisions need a reviewer token: sanitize reviewer add NAME)"
