"""What ``sanitize verify`` found: each mismatch located by version, run, file and sample id."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """One mismatch (or, among warnings, one thing that cannot be checked), located as precisely as known."""

    check: str  # files | samples | counts | runs | decisions | audit
    message: str
    version: str | None = None
    file: str | None = None
    run: str | None = None
    sample_id: str | None = None

    def where(self) -> str:
        parts = [
            f"{k} {v}"
            for k, v in (("version", self.version), ("run", self.run), ("file", self.file), ("sample", self.sample_id))
            if v
        ]
        return ", ".join(parts)


@dataclass
class VerifyReport:
    """What ``verify`` checked and what it found; ``ok`` when there is no problem (warnings allowed)."""

    scope: str
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    versions: int = 0
    files: int = 0
    samples: int = 0
    runs: int = 0
    audit_records: int = 0
    unchained_audit_records: int = 0
    audit_head: str | None = None  # the newest record's hash: note it to check later that none was removed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, check: str, message: str, **where: str | None) -> None:
        self.problems.append(Finding(check, message, **where))

    def warn(self, check: str, message: str, **where: str | None) -> None:
        self.warnings.append(Finding(check, message, **where))
