"""A DR drill: every target of the drill policy restored into a scratch copy, verified, dropped.

The drill first removes scratch copies that killed runs left behind, then runs the one restore
path (restore.py) in drill mode for each target, and keeps the evidence of each in a drill record,
stored as JSON in the artefact store under `drills/<drill_id>/`. Whether each target met its RTO
and RPO is judged here, for the checks and for the report alike.
"""

import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.policy import DrillPolicy, Objectives
from gsv_pipelines.lib.drills.restore import (
    DRILL,
    Evidence,
    Handler,
    RestoreRequest,
    remove_leftovers,
    restore,
)

RECORDS = "drills"
RECORD_FILE = "drill.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class DrillTarget:
    kind: str
    target: str
    objectives: Objectives
    scratch_name: str


def drill_targets(
    policy: DrillPolicy, collections: list[str], database: str | None
) -> list[DrillTarget]:
    """What the drill restores: the policy's kinds, with Qdrant's "*" as every known collection."""
    targets = []
    if policy.qdrant is not None:
        names = policy.qdrant.collections
        for name in sorted(collections) if names is None else names:
            targets.append(
                DrillTarget(
                    backups.QDRANT,
                    name,
                    policy.qdrant.objectives_for(name),
                    policy.qdrant.scratch_name,
                )
            )
    if policy.platform_db is not None and database:
        targets.append(
            DrillTarget(
                backups.PLATFORM_DB,
                database,
                policy.platform_db.objectives,
                policy.platform_db.scratch_name,
            )
        )
    if policy.vault is not None:
        targets.append(
            DrillTarget(
                backups.VAULT,
                backups.VAULT_TARGET,
                policy.vault.objectives,
                policy.vault.scratch_name,
            )
        )
    return targets


@dataclass
class DrillRecord:
    drill_id: str
    run_id: str
    started_at: str
    finished_at: str
    policy: str
    store: str
    targets: list[Evidence] = field(default_factory=list)
    leftovers_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # outside any one target (cleanup)

    @property
    def passed(self) -> bool:
        return bool(self.targets) and all(t.verified and not t.error for t in self.targets)

    @property
    def rto_ok(self) -> bool:
        return bool(self.targets) and all(t.rto_ok for t in self.targets)

    @property
    def rpo_ok(self) -> bool:
        return bool(self.targets) and all(t.rpo_ok for t in self.targets)

    @property
    def folder(self) -> str:
        return posixpath.join(RECORDS, self.drill_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "policy": self.policy,
            "store": self.store,
            "targets": [t.to_dict() for t in self.targets],
            "leftovers_removed": self.leftovers_removed,
            "problems": self.problems,
            "passed": self.passed,
            "rto_within_target": self.rto_ok,
            "rpo_within_target": self.rpo_ok,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DrillRecord":
        return cls(
            drill_id=data["drill_id"],
            run_id=data["run_id"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            policy=data["policy"],
            store=data["store"],
            targets=[Evidence.from_dict(t) for t in data["targets"]],
            leftovers_removed=list(data.get("leftovers_removed", [])),
            problems=list(data.get("problems", [])),
        )


def run_drill(
    handlers: dict[str, Handler | Exception],
    store: ArtefactStore,
    targets: list[DrillTarget],
    *,
    run_id: str,
    active_run_ids: set[str],
    policy_source: str = "",
    now: datetime | None = None,
) -> DrillRecord:
    """Remove leftovers, then drill each target; `handlers` maps a kind to its handler, or to the
    error that kept it from being built (every target of that kind then fails with it)."""
    now = now or datetime.now(UTC)
    record = DrillRecord(
        drill_id=manifests.new_backup_id(now, run_id),
        run_id=run_id,
        started_at=now.isoformat(),
        finished_at="",
        policy=policy_source,
        store=store.location(),
    )
    for kind in sorted({t.kind for t in targets}):
        handler = handlers.get(kind)
        if handler is None or isinstance(handler, Exception):
            continue
        try:
            record.leftovers_removed += remove_leftovers(handler, active_run_ids, now)
        except Exception as exc:
            record.problems.append(
                handler.scrub(f"{kind}: leftovers could not be listed or removed: {exc}")
            )
    for target in targets:
        handler = handlers.get(target.kind)
        if handler is None or isinstance(handler, Exception):
            reason = handler or f"no handler for {target.kind}"
            record.targets.append(
                Evidence(
                    kind=target.kind,
                    target=target.target,
                    mode=DRILL,
                    started_at=datetime.now(UTC).isoformat(),
                    location="unavailable",
                    rto_target_seconds=target.objectives.rto_seconds,
                    rpo_target_seconds=target.objectives.rpo_seconds,
                    error=f"cannot restore {target.kind} here: {reason}",
                )
            )
            continue
        request = RestoreRequest(
            kind=target.kind,
            target=target.target,
            mode=DRILL,
            scratch_name=target.scratch_name,
            rto_target_seconds=target.objectives.rto_seconds,
            rpo_target_seconds=target.objectives.rpo_seconds,
        )
        # RPO is measured from the drill's start, for every target alike.
        evidence = restore(handler, store, request, run_id=run_id, rpo_from=now)
        record.targets.append(evidence)
    record.finished_at = datetime.now(UTC).isoformat()
    return record


def save_record(store: ArtefactStore, record: DrillRecord) -> str:
    key = posixpath.join(record.folder, RECORD_FILE)
    store.write_json_atomic(key, record.to_dict())
    return key


def load_record(store: ArtefactStore, key: str) -> DrillRecord:
    return DrillRecord.from_dict(store.read_json(key))
