"""One typed configuration for a cleaning run, shared by the CLI, the Prefect flow and the catalog.

A misspelled option is an error (``extra="forbid"``), never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_DATASET = "digits-demo"
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_MAX_LENGTH = 100
"""The longest dataset, source or reviewer name. The catalog keeps each in a ``String(200)`` column
(PostgreSQL refuses a longer one, SQLite keeps it silently), and a dataset's name is a folder in the
store whose files add up to 40 characters to it (``.NAME-VERSION.npz.XXXXXXXX.tmp``) within the file
system's 255 bytes per name, which a 300-character name exceeded with an OSError."""


def check_name(kind: str, name: str, pattern: str, allowed: str) -> str:
    """``name`` if it is a well-formed ``kind`` name (``"dataset"``, ``"source"``...), else an error saying why.

    Raises ``ValueError`` naming the kind and the limit; the length is checked first, so that a
    5,000-character name is not echoed back whole.
    """
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"{kind} name is {len(name)} characters long; the limit is {NAME_MAX_LENGTH}")
    if not re.match(pattern, name):
        raise ValueError(f"{kind} name {name!r} must start with a letter or digit and hold only {allowed}")
    return name


class Settings(BaseModel):
    """Where sanitize keeps its data and catalog.

    ``SANITIZE_HOME`` (default ``./data``) holds datasets, runs and exports; ``SANITIZE_CATALOG_URL``
    (default a SQLite file in the home) may name any SQLAlchemy URL, for example PostgreSQL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default_factory=lambda: Path(os.environ.get("SANITIZE_HOME", "data")).resolve())
    catalog_url: str | None = Field(default_factory=lambda: os.environ.get("SANITIZE_CATALOG_URL"))

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"


class ModelConfig(BaseModel):
    """The reference model: one of the package's architectures, or a user's TorchScript file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["auto", "cnn", "resnet18", "colour_cnn"] = Field(
        default="auto", description="Reference-model architecture (auto: by image size)."
    )
    epochs: int | None = Field(
        default=None,
        ge=1,
        le=200,
        description="Reference-model epochs (default: by dataset size, about 150k sample visits, 4 to 40).",
    )
    batch_size: int = Field(default=128, ge=8, le=4096)
    lr: float = Field(default=2e-3, gt=0, le=1.0)
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto (CUDA when present), cpu or cuda."
    )
    torchscript: Path | None = Field(default=None, description="Your own TorchScript model instead of training one.")
    feature_layer: str | None = Field(
        default=None, description="With a TorchScript model: the layer whose output is the feature."
    )

    @model_validator(mode="after")
    def _layer_with_torchscript(self) -> ModelConfig:
        if self.torchscript is not None and not self.feature_layer:
            raise ValueError(
                "a TorchScript model needs feature_layer: the name of the layer whose output is the feature"
            )
        return self


class RedTeamConfig(BaseModel):
    """Poison a clean dataset on the fly to measure detection (red-team runs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attack: Literal[
        "badnets",
        "badnets_random",
        "badnets_colour",
        "blend",
        "sig",
        "wanet",
        "adaptive_blend",
        "adaptive_patch",
        "all_to_all",
        "tact",
        "drawn",
    ] = Field(default="badnets", description="Red team: poison the dataset on the fly with this attack.")
    rate: float = Field(default=0.05, gt=0.0, lt=0.5, description="Red team: share of the training set to poison.")
    target: int = Field(default=0, ge=0, description="Red team: target class.")
    seed: int = 0


class DetectConfig(BaseModel):
    """Which detectors run and how their votes become one verdict per sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # SPECTRE runs as evidence: its gap threshold flagged exactly what the voters did on BadNets and
    # nothing on WaNet 1 %, but it has not been through the matrix's clean runs as a voter. Loss
    # dynamics (the reference model's per-sample training losses) runs as evidence too; input gap
    # holds its groups to the same statistic as a permutation test.
    detectors: tuple[str, ...] = (
        "spectral",
        "activation_clustering",
        "knn",
        "spectre",
        "whitened_clustering",
        "input_gap",
        "input_neighbours",
        "loss_dynamics",
    )
    voters: tuple[str, ...] = ("whitened_clustering", "input_gap")
    # Votes only in classes no voter judged poisoned: dirty-label poisons the model learned too weakly
    # for the feature-space voter (WaNet at 1 %), found by their pixels' neighbours' labels.
    fallback_voters: tuple[str, ...] = ("input_neighbours",)
    contamination: float | None = Field(
        default=None,
        gt=0.0,
        lt=0.5,
        description="Expected poison share, if known (default: estimated per class from the data).",
    )
    knn_k: int = Field(default=20, ge=1, le=500)

    @model_validator(mode="before")
    @classmethod
    def _default_fallback_among_detectors(cls, data: Any) -> Any:
        # A detector list written without the fallback voter (and every run recorded before it
        # existed) runs without it, rather than failing; a fallback named explicitly must run.
        if isinstance(data, dict) and "detectors" in data and "fallback_voters" not in data:
            default = cls.model_fields["fallback_voters"].default
            data = {**data, "fallback_voters": tuple(v for v in default if v in tuple(data["detectors"]))}
        return data


class RunConfig(BaseModel):
    """Everything a cleaning run does; recorded with the run and hashed to recognise repeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(
        default=DEFAULT_DATASET,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=DATASET_PATTERN,
        description=f"Dataset to clean ({DEFAULT_DATASET}: the built-in digits demo, with a red team).",
    )
    version: str | None = Field(default=None, description="Dataset version (default: the dataset's current one).")
    model: ModelConfig = ModelConfig()
    detect: DetectConfig = DetectConfig()
    redteam: RedTeamConfig | None = None
    retrain: bool = Field(default=True, description="Retrain a clean model on the kept samples.")
    # The clean model is the one measured and handed on, so it trains longer than the reference model
    # and with random small warps on half of each batch (the reference never does: its features are
    # what the detectors read). On Fashion-MNIST a model so trained on clean data reaches 0.932 instead
    # of 0.920, and is moved less by small warps (a warped shirt read as a T-shirt: WaNet's trigger
    # "succeeds" on 1.9 % of a clean-data model's test images instead of 2.6 %). The warps do not hide
    # a backdoor: trained on WaNet 10 % uncleaned, the model's ASR is still 0.98.
    retrain_epochs: int | None = Field(
        default=None,
        ge=1,
        le=200,
        description="Clean-model epochs (default: three times the reference model's, up to 40).",
    )
    retrain_augment: Literal["none", "warp"] = Field(
        default="warp", description="The clean model's training augmentation: warp (random small warps) or none."
    )
    seed: int = Field(default=0, description="Seed of every random choice.")
    # Who approves a clean version the run leaves nothing to review in (see sanitize.runs.approval_policy).
    approve: Literal["auto", "review"] | None = Field(
        default=None,
        description="When the run flags nothing: auto (approve its clean version at once) or review (a "
        "person approves it: sanitize approve RUN). Default: the dataset's policy, given to an earlier run; "
        "without one, review until the dataset has an approved version, then auto.",
    )

    @model_validator(mode="after")
    def _voters_run(self) -> RunConfig:
        detectors = list(self.detect.detectors)
        missing = [v for v in self.detect.voters if v not in detectors]
        if missing:
            raise ValueError(f"voters {missing} are not among the detectors {detectors}")
        missing = [v for v in self.detect.fallback_voters if v not in detectors]
        if missing:
            raise ValueError(
                f"fallback voters {missing} are not among the detectors {detectors}; "
                "add them to the detectors or set fallback_voters to []"
            )
        both = sorted(set(self.detect.voters) & set(self.detect.fallback_voters))
        if both:
            raise ValueError(f"detectors {both} are both voters and fallback voters; name each in one list")
        return self

    def fingerprint(self) -> str:
        """A stable hash of the configuration, to recognise an unchanged rerun: without the version, and
        without the approval policy, which changes who approves the result, not the result (and was
        not there when earlier runs' fingerprints were taken)."""
        payload = self.model_dump(mode="json", exclude={"version", "approve"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
