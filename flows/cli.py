"""The installed ``sanitize`` command: the library's command line, able to run what needs Prefect.

:mod:`sanitize.cli` declares every command and option and runs all that needs only the library; it
never imports ``flows/``. What needs Prefect (``run --prefect``, ``schedule`` serving, ``up``) it asks
of an :class:`~sanitize.cli.Orchestration`, and :func:`main` hands it :class:`PrefectOrchestration`
through click's context object. Handing in an object, rather than adding or overriding commands of
the library's app here, keeps each command declared once, the help the same from either entry
point, and no registration done as a side effect of an import.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

from sanitize import cli
from sanitize.cli.output import console
from sanitize.config import RunConfig
from sanitize.schedule import ScheduleSpec
from sanitize.workspace import Workspace


class PrefectOrchestration:
    """Cleaning as the Prefect flow, and serving schedules with a local Prefect server and the review page.

    ``flows.clean`` and ``flows.serve`` are imported when used: they load Prefect, torch and FastAPI,
    which would make every other command start later (``sanitize --help``: 6 s of CPU instead of 0.9 s).
    """

    def clean(self, config: RunConfig) -> dict[str, Any]:
        """Run :func:`flows.clean.cleaning_flow` (Prefect's ephemeral API when no server is set)."""
        from flows.clean import cleaning_flow

        summary: dict[str, Any] = cleaning_flow(config=config)
        return summary

    def serve(self, ws: Workspace, specs: list[ScheduleSpec], *, port: int, review_port: int | None) -> None:
        """Start (or find) the Prefect server, the review page, and serve ``specs`` until Ctrl-C."""
        from flows.serve import serve_schedules, start_review_page, start_server

        os.environ.setdefault("SANITIZE_HOME", str(ws.settings.home))
        console.print(f"Prefect server on 127.0.0.1:{port}: starting or connecting (up to a few minutes)...")
        server = start_server(ws.settings.home, port=port)
        try:
            how = f"started here, log {server.log}" if server.started_here else "already running"
            console.print(f"Prefect UI: [bold]{server.ui_url}[/bold] ({how})")
            if review_port is not None:
                console.print(f"review page: {start_review_page(ws, review_port)}")
                # The flow runs' artifacts link to the run's page there.
                os.environ.setdefault("SANITIZE_REVIEW_URL", f"http://127.0.0.1:{review_port}")
            if specs:
                for spec in specs:
                    console.print(f"serving {spec.dataset}: {spec.describe()}")
                console.print("Ctrl-C stops serving" + (" and the server" if server.started_here else ""))
                serve_schedules(specs, server)
            else:
                console.print("no dataset is scheduled (add one: sanitize schedule --dataset NAME --cron '0 3 * * *')")
                console.print("Ctrl-C stops" + (" the server" if server.started_here else " the review page"))
                while server.process is None or server.process.poll() is None:
                    time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()

    def trigger(self, ws: Workspace, spec: ScheduleSpec, *, port: int, here: bool) -> dict[str, Any]:
        """A flow run of the dataset's deployment on the Prefect server at ``port``, which the process
        serving it runs; or, with ``here`` or where no server has the deployment, the scheduled flow
        in this process (Prefect's ephemeral API)."""
        from flows.serve import DEFAULT_HOST, PrefectServer, deployment_served, server_healthy, trigger_deployment

        api_url = f"http://{DEFAULT_HOST}:{port}/api"
        if not here and server_healthy(api_url):
            server = PrefectServer(api_url)
            flow_run = trigger_deployment(server, spec)
            if flow_run is not None:
                return {
                    "where": "server",
                    "flow_run_id": str(flow_run.id),
                    "flow_run": flow_run.name,
                    "url": f"{server.ui_url}/runs/flow-run/{flow_run.id}",
                    "served": deployment_served(server, spec),
                }
            console.print(f"the Prefect server at {api_url} has no deployment of {spec.dataset}: running it here")
        from flows.scheduled import scheduled_cleaning_flow

        os.environ.setdefault("SANITIZE_HOME", str(ws.settings.home))
        state = scheduled_cleaning_flow(config=spec.config, return_state=True)
        summary = cast(dict[str, Any], state.result())  # a failed run raises its error here
        return {"where": "here", "state": state.name, "summary": summary}


def main() -> None:
    """The ``sanitize`` console script."""
    cli.main(orchestration=PrefectOrchestration())


if __name__ == "__main__":
    main()
