"""The one restore path: what a DR drill rehearses is what a disaster restore runs.

    choose the backup (newest, a given id, or the newest consistent at a point in time)
    verify every file of it against the manifest's SHA-256 again
    drill / dry run:  restore into a scratch copy (never the source), verify, drop the copy
    restore:          back the destination up (safety backup), replace it, restore, verify;
                      if anything fails, put the destination back as it was (absent, or its
                      safety backup restored and verified) and say so (`destination_after`)

Each step's outcome and duration go into an `Evidence` record: the backup used and its checksums,
the checks run and what they found, RTO (from the start of the restore to verified) and RPO (the
drill's start minus the backup's consistency point), and what was cleaned up. Kinds plug in as
`Handler`s (restore_qdrant.py, restore_platform_db.py, restore_vault.py).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.manifest import Manifest
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills import scratch as restore_scratch
from gsv_pipelines.lib.drills.policy import DEFAULT_SCRATCH_NAME

DRILL, DRY_RUN, RESTORE = "drill", "dry_run", "restore"
MODES = (DRILL, DRY_RUN, RESTORE)


class RestoreError(RuntimeError):
    """A restore cannot go ahead, or did not end verified; the evidence says why."""


@dataclass
class Check:
    name: str
    passed: bool | None  # None: not applicable to this backup
    detail: str


class Handler(Protocol):
    """One kind of target (Qdrant, the platform database, Vault) for the restore path."""

    kind: str
    name_limit: int

    def location(self) -> str:
        """Where copies are restored, for people (no credentials)."""

    def is_source(self, name: str, target: str) -> bool:
        """Whether restoring into `name` would write over the live `target`."""

    def exists(self, name: str) -> bool: ...

    def describe(self, name: str) -> dict[str, Any]:
        """A few facts about an existing destination (its points, its rows)."""

    def restore(self, manifest: Manifest, name: str, marker: dict | None) -> dict[str, Any]:
        """Restore the backup into `name`, which does not exist; return facts about it."""

    def verify(self, manifest: Manifest, name: str) -> list[Check]: ...

    def drop(self, name: str) -> None: ...

    def safety_backup(self, name: str, run_id: str) -> Manifest: ...

    def leftovers(self) -> list[restore_scratch.Leftover]: ...

    def scrub(self, text: str) -> str:
        """`text` without any credential the handler holds."""


@dataclass
class Evidence:
    """What one restore of one target did and found: the record an auditor reads."""

    kind: str
    target: str
    mode: str
    started_at: str
    location: str
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None
    backup: dict[str, Any] | None = None
    destination: str | None = None
    checks: list[Check] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    verified: bool = False
    error: str | None = None
    safety_backup: dict[str, Any] | None = None
    cleaned_up: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.target}"

    @property
    def rto_ok(self) -> bool:
        return (
            self.verified
            and self.rto_seconds is not None
            and (self.rto_target_seconds is None or self.rto_seconds <= self.rto_target_seconds)
        )

    @property
    def rpo_ok(self) -> bool:
        return self.rpo_seconds is not None and (
            self.rpo_target_seconds is None or self.rpo_seconds <= self.rpo_target_seconds
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evidence":
        data = dict(data)
        data["checks"] = [Check(**c) for c in data.get("checks", [])]
        return cls(**data)


@dataclass(frozen=True)
class RestoreRequest:
    kind: str
    target: str
    mode: str = DRILL
    destination: str | None = None  # restore and dry run: the copy to replace
    backup_id: str | None = None  # default: the newest backup
    point_in_time: datetime | None = None  # or: the newest consistent at or before it
    scratch_name: str = DEFAULT_SCRATCH_NAME
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None


def select_backup(
    store: ArtefactStore,
    kind: str,
    target: str,
    backup_id: str | None = None,
    point_in_time: datetime | None = None,
) -> Manifest | None:
    """The backup to restore: `backup_id`, else the newest consistent at or before
    `point_in_time`, else the newest. Only committed (verified when written) backups count."""
    backups = manifests.list_backups(store, kind, target)
    if backup_id:
        chosen = [m for m in backups if m.backup_id == backup_id]
        if not chosen:
            raise RestoreError(
                f"no backup {backup_id} of {kind}/{target} in {store.location()} "
                f"({len(backups)} backup(s) there)"
            )
        return chosen[0]
    if point_in_time is not None:
        backups = [m for m in backups if m.consistency_time <= point_in_time]
    return backups[-1] if backups else None


class _Phases:
    def __init__(self, evidence: Evidence):
        self.evidence = evidence
        self.start = time.monotonic()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.evidence.phases[name] = round(time.monotonic() - began, 3)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 3)


def _backup_record(store: ArtefactStore, manifest: Manifest) -> dict[str, Any]:
    details = manifest.details
    return {
        "backup_id": manifest.backup_id,
        "method": manifest.method,
        "location": store.location(manifest.folder),
        "consistency_point": manifest.consistency_point,
        "files": [dict(f) for f in manifest.files],
        "points": details.get("points"),
        "rows": details.get("rows"),
        "reason": details.get("reason"),
    }


def restore(
    handler: Handler,
    store: ArtefactStore,
    request: RestoreRequest,
    *,
    run_id: str,
    now: datetime | None = None,
    rpo_from: datetime | None = None,
) -> Evidence:
    """Run the restore path for one target; never raises for what went wrong with the target
    itself (that goes into the evidence), only for interruptions. Scratch copies are dropped
    whatever happens. RPO is measured from `rpo_from` (a drill's start; default `now`)."""
    if request.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    now = now or datetime.now(UTC)
    evidence = Evidence(
        kind=request.kind,
        target=request.target,
        mode=request.mode,
        started_at=now.isoformat(),
        location=handler.location(),
        rto_target_seconds=request.rto_target_seconds,
        rpo_target_seconds=request.rpo_target_seconds,
    )
    try:
        _run(handler, store, request, evidence, run_id, now, rpo_from or now)
    except RestoreError as exc:
        evidence.error = handler.scrub(str(exc))
    except Exception as exc:
        evidence.error = handler.scrub(f"{type(exc).__name__}: {exc}")
    return evidence


def _run(
    handler: Handler,
    store: ArtefactStore,
    request: RestoreRequest,
    evidence: Evidence,
    run_id: str,
    now: datetime,
    rpo_from: datetime,
) -> None:
    kind, target = request.kind, request.target
    manifest = select_backup(store, kind, target, request.backup_id, request.point_in_time)
    if manifest is None:
        when = (
            f" consistent at or before {request.point_in_time.isoformat()}"
            if request.point_in_time
            else ""
        )
        evidence.checks.append(Check("backup_present", False, f"no backup{when}"))
        raise RestoreError(f"no backup of {kind}/{target}{when} in {store.location()}")
    evidence.backup = _backup_record(store, manifest)
    evidence.rpo_seconds = round((rpo_from - manifest.consistency_time).total_seconds(), 3)
    phases = _Phases(evidence)

    with phases("verify_backup"):
        verification = manifests.verify(store, manifest)
    evidence.checks.append(
        Check(
            "backup_checksums",
            verification.ok,
            "; ".join(verification.problems)
            or f"{verification.files_checked} file(s), {verification.bytes_checked} bytes: "
            "every SHA-256 matches the manifest",
        )
    )
    if not verification.ok:
        raise RestoreError(
            f"backup {manifest.backup_id} of {evidence.label} fails its checksums: "
            + "; ".join(verification.problems)
        )

    scratch = request.mode in (DRILL, DRY_RUN)
    if request.mode in (DRY_RUN, RESTORE):
        if not request.destination:
            raise RestoreError("a restore needs a destination")
        if handler.exists(request.destination):
            evidence.facts["destination_before"] = handler.describe(request.destination)
        else:
            evidence.facts["destination_before"] = "absent"
    if scratch:
        name = restore_scratch.scratch_name(
            request.scratch_name, target, now, run_id, handler.name_limit
        )
        if handler.is_source(name, target):
            raise RestoreError(
                f"refusing to restore {evidence.label} into {name}: the scratch copy would be "
                "the source itself"
            )
        if not name.startswith(restore_scratch.PREFIX):
            raise RestoreError(
                f"refusing scratch copy {name}: scratch copies must be named "
                f"{restore_scratch.PREFIX}… so that a killed run's leftovers are found"
            )
        if handler.exists(name):
            raise RestoreError(f"scratch copy {name} already exists in {handler.location()}")
        mark = restore_scratch.marker(run_id, request.mode, kind, target, now)
    else:
        name, mark = request.destination, None
    evidence.destination = name

    safety: Manifest | None = None
    touched = False  # whether the destination was changed (a scratch copy is always dropped)
    try:
        if not scratch and handler.exists(name):
            with phases("safety_backup"):
                safety = handler.safety_backup(name, run_id)
            evidence.safety_backup = {
                "backup_id": safety.backup_id,
                "location": store.location(safety.folder),
                "files": [dict(f) for f in safety.files],
            }
            touched = True
            with phases("remove_destination"):
                handler.drop(name)
        touched = True
        with phases("restore"):
            evidence.facts.update(handler.restore(manifest, name, mark))
        with phases("verify"):
            evidence.checks += handler.verify(manifest, name)
        failed = [c for c in evidence.checks if c.passed is False]
        evidence.verified = not failed
        if failed:
            raise RestoreError(
                f"the restore of {evidence.label} into {name} does not match backup "
                f"{manifest.backup_id}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
            )
        # Safety backup and removal are part of recovering, as they would be on the day.
        evidence.rto_seconds = phases.elapsed()
        if not scratch:
            evidence.facts["destination_after"] = (
                f"backup {manifest.backup_id}, restored and verified"
            )
    except BaseException:
        if not scratch and touched:
            with phases("roll_back"):
                _roll_back(handler, evidence, name, safety)
        raise
    finally:
        if scratch:
            _drop_scratch(handler, evidence, name)


def _roll_back(handler: Handler, evidence: Evidence, name: str, safety: Manifest | None) -> None:
    """Put the destination of a failed restore back as it was: absent, or the content its safety
    backup took (restored and verified like any backup). Says what it found in the evidence."""
    try:
        if handler.exists(name):
            handler.drop(name)
        if safety is None:
            evidence.facts["destination_after"] = "absent, as before (the failed restore removed)"
            return
        handler.restore(safety, name, None)
        problems = [c for c in handler.verify(safety, name) if c.passed is False]
        if problems:
            evidence.facts["destination_after"] = (
                f"safety backup {safety.backup_id} restored but NOT verified: "
                + "; ".join(f"{c.name}: {c.detail}" for c in problems)
            )
        else:
            evidence.facts["destination_after"] = (
                f"as before: safety backup {safety.backup_id} restored and verified"
            )
    except Exception as exc:
        evidence.facts["destination_after"] = handler.scrub(
            f"unknown: rolling back failed ({type(exc).__name__}: {exc}); the previous content "
            f"is in safety backup {safety.backup_id if safety else '(none taken)'}"
        )


def _drop_scratch(handler: Handler, evidence: Evidence, name: str) -> None:
    began = time.monotonic()
    try:
        if handler.exists(name):
            handler.drop(name)
            evidence.cleaned_up.append(f"dropped scratch copy {name}")
    except Exception as exc:
        message = handler.scrub(f"could not drop scratch copy {name}: {exc}")
        evidence.cleaned_up.append(message + " (the next drill removes it)")
        evidence.error = evidence.error or message
    finally:
        evidence.phases["cleanup"] = round(time.monotonic() - began, 3)


def remove_leftovers(
    handler: Handler, active_run_ids: set[str], now: datetime | None = None
) -> list[str]:
    """Drop the scratch copies that killed runs left behind; say what was removed."""
    now = now or datetime.now(UTC)
    removed = []
    for leftover in handler.leftovers():
        if restore_scratch.is_leftover(leftover.name, leftover.marker, active_run_ids, now):
            handler.drop(leftover.name)
            mark = leftover.marker.get(restore_scratch.MARKER_KEY) or {}
            removed.append(
                f"removed leftover {handler.kind} scratch copy {leftover.name} "
                f"(run {str(mark.get('run_id', '?'))[:8]}, created {mark.get('created_at', '?')})"
            )
    return removed
