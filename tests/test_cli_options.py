"""The command line's run options come from the config, and what needs Prefect goes through the orchestration.

No model is trained here: a fake orchestration records what ``run --prefect``, ``schedule`` and ``up``
ask of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from sanitize import cli
from sanitize.cli.options import RUN_OPTIONS
from sanitize.config import ModelConfig, RedTeamConfig, RunConfig
from sanitize.errors import SanitizeError
from sanitize.schedule import ScheduleSpec, list_schedules
from sanitize.workspace import Workspace


@dataclass
class FakeOrchestration:
    cleaned: list[RunConfig] = field(default_factory=list)
    served: list[tuple[list[ScheduleSpec], int, int | None]] = field(default_factory=list)

    def clean(self, config: RunConfig) -> dict[str, Any]:
        self.cleaned.append(config)
        return {"run_id": "run-fake"}

    def serve(self, ws: Workspace, specs: list[ScheduleSpec], *, port: int, review_port: int | None) -> None:
        self.served.append((specs, port, review_port))


def options_of(command: str) -> dict[str, Any]:
    group = get_command(cli.app)
    return {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]


def prefect_run(*args: str) -> RunConfig:
    fake = FakeOrchestration()
    result = CliRunner().invoke(cli.app, ["run", "--prefect", "--json", *args], obj=fake, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (config,) = fake.cleaned
    return config


def test_run_and_schedule_take_the_same_config_options() -> None:
    run, schedule = options_of("run"), options_of("schedule")
    names = [o.name for o in RUN_OPTIONS]

    assert [n for n in run if n in names] == names
    assert [n for n in schedule if n in names] == [n for n in names if n != "version"]
    assert schedule["dataset"].required and not run["dataset"].required
    for name in names:
        if name in schedule:
            assert (schedule[name].metavar, schedule[name].help) == (run[name].metavar, run[name].help)


def test_schedule_takes_every_option_run_takes() -> None:
    # A scheduled run cleans the dataset's current version (no --version) as a flow served by Prefect
    # (no --prefect), and is not printed to a terminal (no --json); everything else is the same.
    run, schedule = set(options_of("run")), set(options_of("schedule"))
    assert run - schedule == {"version", "prefect", "as_json"}
    assert schedule - run == {"cron", "interval", "serve", "port"}
    assert {"arch", "model", "feature_layer", "approve"} <= schedule


def test_trigger_runs_a_scheduled_dataset_now(sanitize_home: Path) -> None:
    @dataclass
    class Triggers(FakeOrchestration):
        triggered: list[tuple[ScheduleSpec, int, bool]] = field(default_factory=list)

        def trigger(self, ws: Workspace, spec: ScheduleSpec, *, port: int, here: bool) -> dict[str, Any]:
            self.triggered.append((spec, port, here))
            return {"where": "server", "flow_run": "calm-otter", "url": "http://ui/runs/flow-run/1", "served": False}

    fake = Triggers()
    runner = CliRunner()
    missing = runner.invoke(cli.app, ["trigger", "digits-demo"], obj=fake)
    assert isinstance(missing.exception, SanitizeError) and "has no schedule" in str(missing.exception)

    made = runner.invoke(cli.app, ["schedule", "--dataset", "digits-demo", "--interval", "3600", "--no-serve"])
    assert made.exit_code == 0, made.output
    now = runner.invoke(cli.app, ["trigger", "digits-demo", "--port", "4300"], obj=fake, env={"COLUMNS": "200"})
    assert now.exit_code == 0, now.output
    ((spec, port, here),) = fake.triggered
    assert (spec.dataset, port, here) == ("digits-demo", 4300, False) and spec == list_schedules(Workspace())[0]
    assert "started flow run calm-otter of digits-demo: http://ui/runs/flow-run/1" in now.output
    assert "nothing serves this schedule now" in now.output


def test_an_options_help_is_its_config_fields_description() -> None:
    run = options_of("run")
    for option in RUN_OPTIONS:
        assert option.field.description and run[option.name].help.startswith(option.field.description)
    assert "[0.0<x<0.5]" in run["rate"].help and "[1<=x<=200]" in run["retrain_epochs"].help


def test_run_with_no_arguments_is_the_demo_with_its_red_team() -> None:
    assert prefect_run() == RunConfig(redteam=RedTeamConfig())


def test_run_options_land_in_their_config_fields() -> None:
    config = prefect_run(
        *("--dataset", "shop", "--poison", "wanet", "--rate", "0.1", "--target", "3", "--seed", "7"),
        *("--epochs", "5", "--arch", "cnn", "--device", "cpu", "--no-retrain", "--retrain-augment", "none"),
    )

    assert config == RunConfig(
        dataset="shop",
        seed=7,
        retrain=False,
        retrain_augment="none",
        redteam=RedTeamConfig(attack="wanet", rate=0.1, target=3, seed=7),
        model=ModelConfig(epochs=5, arch="cnn", device="cpu"),
    )


def test_a_dataset_of_ones_own_has_no_red_team_unless_asked() -> None:
    assert prefect_run("--dataset", "shop", "--rate", "0.9").redteam is None  # --rate unused: not checked
    assert prefect_run("--version", "v1").redteam is None  # a pinned demo version is cleaned as it is


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--poison", "nosuch"], "'--poison': redteam.attack: Input should be 'badnets', "),
        (["--arch", "vgg"], "'--arch': model.arch: Input should be 'auto', 'cnn', 'resnet18' or 'colour_cnn'"),
        (
            ["--contamination", "0.5", "--epochs", "0"],
            "'--epochs' / '--contamination': model.epochs: Input should be greater than or equal to 1, got 0; "
            "detect.contamination: Input should be less than 0.5, got 0.5",
        ),
        (["--device", "tpu"], "'--device': model.device: String should match pattern"),
    ],
)
def test_a_bad_value_exits_2_naming_the_option_and_field(args: list[str], named: str) -> None:
    fake = FakeOrchestration()
    result = CliRunner().invoke(cli.app, ["run", "--prefect", *args], obj=fake, env={"COLUMNS": "300"})

    assert result.exit_code == 2
    assert f"Invalid value for {named}" in " ".join(result.output.split())
    assert fake.cleaned == []


def test_without_an_orchestration_the_prefect_commands_say_what_they_need() -> None:
    with pytest.raises(SanitizeError, match="--prefect needs Prefect: use the installed 'sanitize' command"):
        CliRunner().invoke(cli.app, ["run", "--prefect"], catch_exceptions=False)
    with pytest.raises(SanitizeError, match="up needs Prefect"):
        CliRunner().invoke(cli.app, ["up"], catch_exceptions=False)


def test_schedule_serves_its_spec_and_up_serves_every_schedule(sanitize_home: Path) -> None:
    fake = FakeOrchestration()
    runner = CliRunner()

    made = runner.invoke(cli.app, ["schedule", "--dataset", "digits-demo", "--interval", "3600"], obj=fake)
    assert made.exit_code == 0, made.output
    (spec,), port, review_port = fake.served[0]
    assert (spec.dataset, spec.interval_seconds, port, review_port) == ("digits-demo", 3600, 4200, None)
    assert spec.config == RunConfig(redteam=RedTeamConfig())

    assert runner.invoke(cli.app, ["up", "--port", "4300"], obj=fake).exit_code == 0
    assert fake.served[1] == (list_schedules(Workspace()), 4300, 8765)


def test_the_installed_command_lists_every_command(sanitize_home: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}  # SANITIZE_HOME set by the fixture: flows makes its prefect folder there
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, env=env)

    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert set(get_command(cli.app).commands) <= listed  # type: ignore[attr-defined]
