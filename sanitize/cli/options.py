"""The run configuration's command-line options, derived from the pydantic models of :mod:`sanitize.config`.

One place declares an option: its field in :class:`~sanitize.config.RunConfig` gives the option's
type, default, help (the field's ``description``), bounds (``ge``/``gt``/``le``/``lt``, shown in the
help) and choices (a ``Literal``, shown as the option's values). :func:`config_options` puts these
options in place of a command's ``config`` parameter and calls the command with the validated
:class:`RunConfig`, so ``run`` and ``schedule`` share them.

Pydantic checks the values when the configuration is built, not click while it parses, so an option
the run does not use is not checked (``--rate`` without a red team: the run has no red-team section)
and a wrong choice gets pydantic's message. A bad value exits 2 with click's
``Invalid value for '--OPTION'``, naming the option and its field.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from sanitize.cli.output import shown
from sanitize.config import DEFAULT_DATASET, RunConfig

F = TypeVar("F", bound=Callable[..., Any])

FIELD_DEFAULT: Any = object()  # the option's default is its field's


@dataclass(frozen=True)
class ConfigOption:
    """A command-line option that sets one field of the run configuration.

    ``name`` is the option (``retrain_epochs`` is ``--retrain-epochs``); ``path`` the field in
    :class:`RunConfig` (``("model", "epochs")``); ``default`` replaces the field's default where the
    option means more than the field does (``--poison``'s None: no red team).
    """

    name: str
    path: tuple[str, ...]
    default: Any = FIELD_DEFAULT

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def field(self) -> FieldInfo:
        model: type[BaseModel] = RunConfig
        for section in self.path[:-1]:
            model = _section_model(model.model_fields[section].annotation)
        return model.model_fields[self.path[-1]]


# The options in the order the help lists them.
RUN_OPTIONS = (
    ConfigOption("dataset", ("dataset",)),
    ConfigOption("version", ("version",)),
    ConfigOption("poison", ("redteam", "attack"), default=None),
    ConfigOption("rate", ("redteam", "rate")),
    ConfigOption("target", ("redteam", "target")),
    ConfigOption("contamination", ("detect", "contamination")),
    ConfigOption("epochs", ("model", "epochs")),
    ConfigOption("arch", ("model", "arch")),
    ConfigOption("model", ("model", "torchscript")),
    ConfigOption("feature_layer", ("model", "feature_layer")),
    ConfigOption("device", ("model", "device")),
    ConfigOption("retrain", ("retrain",)),
    ConfigOption("retrain_epochs", ("retrain_epochs",)),
    ConfigOption("retrain_augment", ("retrain_augment",)),
    ConfigOption("seed", ("seed",)),
    ConfigOption("approve", ("approve",)),
)
_BY_PATH = {option.path: option for option in RUN_OPTIONS}


def _section_model(annotation: Any) -> type[BaseModel]:
    """The model of a section of the configuration (``ModelConfig``, or ``RedTeamConfig | None``)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"{annotation!r} is not a section of the run configuration")


def _bounds(field: FieldInfo) -> str:
    """The field's bounds as click writes a range (``1<=x<=200``, ``x>=0``), or ''."""
    low = high = None  # (bound, its operator)
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge | annotated_types.Gt):
            low = (rule.ge, "<=") if isinstance(rule, annotated_types.Ge) else (rule.gt, "<")
        elif isinstance(rule, annotated_types.Le | annotated_types.Lt):
            high = (rule.le, "<=") if isinstance(rule, annotated_types.Le) else (rule.lt, "<")
    if low and high:
        return f"{low[0]}{low[1]}x{high[1]}{high[0]}"
    if low:
        return f"x{low[1].replace('<', '>')}{low[0]}"
    return f"x{high[1]}{high[0]}" if high else ""


def _parameter(option: ConfigOption, *, required: bool) -> inspect.Parameter:
    """The Typer parameter of ``option``: the field's type, default and help."""
    field = option.field
    default = ... if required else field.default if option.default is FIELD_DEFAULT else option.default
    annotation: Any = field.annotation
    metavar = None
    if get_origin(annotation) is Literal:
        # Given to pydantic as text, so that a wrong choice gets pydantic's message, naming the field.
        metavar = "<" + "|".join(str(choice) for choice in get_args(annotation)) + ">"
        annotation = str if default is not None else str | None
    bounds = _bounds(field)
    help_text = f"{field.description} {escape(f'[{bounds}]')}" if bounds else field.description
    info = typer.Option(default, help=help_text, metavar=metavar)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def run_config(values: Mapping[str, Any], ctx: typer.Context | None = None) -> RunConfig:
    """The configuration the options' ``values`` (by option name) ask for; ``ctx`` the command's, for errors.

    The red team runs when ``--poison`` names an attack, or on the built-in demo's current version
    (so that the demo shows a detection); its seed is the run's.
    """
    data: dict[str, Any] = {}
    for option in RUN_OPTIONS:
        if option.name in values:
            *sections, name = option.path
            node = data
            for section in sections:
                node = node.setdefault(section, {})
            node[name] = values[option.name]
    redteam = {name: value for name, value in data.pop("redteam", {}).items() if value is not None}
    if "attack" in redteam or (data.get("dataset") == DEFAULT_DATASET and data.get("version") is None):
        data["redteam"] = {**redteam, "seed": data.get("seed", RunConfig.model_fields["seed"].default)}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _option_error(exc, ctx) from None


def _option_error(exc: ValidationError, ctx: typer.Context | None) -> Exception:
    """Click's "Invalid value for '--OPTION'" naming each bad option; ``exc`` itself where a rule spans fields."""
    flags, problems = [], []
    for error in exc.errors():
        option = _BY_PATH.get(tuple(str(part) for part in error["loc"]))
        if option is None:  # e.g. a TorchScript model without its feature layer: pydantic says which
            return exc
        flags.append(option.flag)
        problems.append(f"{'.'.join(option.path)}: {error['msg']}, got {shown(error['input'])}")
    return typer.BadParameter("; ".join(problems), ctx=ctx, param_hint=flags)


def config_options(*, exclude: Collection[str] = (), required: Collection[str] = ()) -> Callable[[F], F]:
    """Give a command the run configuration's options in place of its ``config: RunConfig`` parameter.

    ``exclude`` names options the command does not take; ``required`` those it needs given.
    """
    options = [option for option in RUN_OPTIONS if option.name not in exclude]

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
        at = list(signature.parameters).index("config")
        parameters = [
            *own[:at],
            *(_parameter(option, required=option.name in required) for option in options),
            *own[at + 1 :],
        ]

        @functools.wraps(command)
        def with_config(**kwargs: Any) -> Any:
            values = {option.name: kwargs.pop(option.name) for option in options}
            ctx = next((value for value in kwargs.values() if isinstance(value, typer.Context)), None)
            return command(config=run_config(values, ctx), **kwargs)

        # Typer reads the options from the signature and the annotations.
        with_config.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_config.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_config  # type: ignore[return-value]

    return decorate
