"""restore_job: the real restore, for the day of a disaster, launched by hand from the UI.

It runs the restore path every DR drill rehearses (gsv_pipelines/lib/drills/restore.py): verify the
backup's checksums, take a safety backup of the destination, replace it, restore, verify as the
drill does, and keep the same evidence. docs/drills.md, "Disaster recovery", is its runbook.
"""

import contextlib
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from gsv_pipelines.defs.drills.assets import active_run_ids, build_handlers
from gsv_pipelines.lib.drills.policy import KINDS
from gsv_pipelines.lib.drills.report import store_restore_evidence
from gsv_pipelines.lib.drills.restore import (
    DRY_RUN,
    RESTORE,
    RestoreRequest,
    remove_leftovers,
    restore,
)
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.vault import VaultResource


class RestoreConfig(dg.Config):
    """What to restore, from which backup, into what; and the confirmation a real restore needs."""

    target: str = Field(
        description="what was backed up, as `<kind>/<name>`: `qdrant/<collection>`, "
        "`platform_db/<database>` (the file's stem for SQLite), `vault/vault`"
    )
    destination: str = Field(
        description="the collection or database to restore into, on the configured Qdrant or "
        "database server: created, or replaced after a safety backup"
    )
    backup_id: str = Field(default="", description="a backup id; empty: the newest backup")
    point_in_time: str = Field(
        default="",
        description="ISO 8601 time (UTC unless it says otherwise): restore the newest backup "
        "consistent at or before it",
    )
    dry_run: bool = Field(
        # True by default: the launchpad scaffolds a dry run, and a real restore is asked for
        # in so many words (dry_run: false and confirm).
        default=True,
        description="only verify: restore into a scratch copy, verify it, drop it, and report "
        "what a real restore would replace; changes nothing. false (with confirm) restores",
    )
    confirm: str = Field(
        default="", description="a real restore overwrites the destination: repeat its name here"
    )


def _request(config: RestoreConfig, policies: PoliciesResource) -> RestoreRequest:
    kind, _, name = config.target.partition("/")
    if kind not in KINDS or not name:
        raise dg.Failure(
            f"target must be <kind>/<name> with kind one of {', '.join(KINDS)}, "
            f"not {config.target!r}"
        )
    if config.backup_id and config.point_in_time:
        raise dg.Failure("give backup_id or point_in_time, not both")
    when = None
    if config.point_in_time:
        try:
            when = datetime.fromisoformat(config.point_in_time)
        except ValueError:
            raise dg.Failure(
                f"point_in_time is not an ISO 8601 time: {config.point_in_time!r}"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not config.dry_run and config.confirm != config.destination:
        raise dg.Failure(
            f"refusing to restore into {config.destination!r} without confirmation: a restore "
            "replaces it. Set confirm to the destination's name to go ahead, or dry_run: true "
            "to only verify."
        )
    drills = policies.drills()
    policy = {"qdrant": drills.qdrant, "platform_db": drills.platform_db, "vault": drills.vault}
    kind_policy = policy[kind]
    objectives = None
    if kind_policy is not None:
        objectives = (
            drills.qdrant.objectives_for(name) if kind == "qdrant" else kind_policy.objectives
        )
    return RestoreRequest(
        kind=kind,
        target=name,
        mode=DRY_RUN if config.dry_run else RESTORE,
        destination=config.destination,
        backup_id=config.backup_id or None,
        point_in_time=when,
        rto_target_seconds=objectives.rto_seconds if objectives else None,
        rpo_target_seconds=objectives.rpo_seconds if objectives else None,
    )


@dg.op(
    name="restore",
    out=dg.Out(dg.Nothing),
    tags={"gsv/domain": "drills"},
    description="Restore one backup into a destination (or, dry run, into a scratch copy), "
    "verify it as the DR drills do, and store the evidence and its report.",
)
def restore_op(
    context: dg.OpExecutionContext,
    config: RestoreConfig,
    qdrant: QdrantResource,
    artefact_store: ArtefactStoreResource,
    platform_db: DatabaseResource,
    vault: VaultResource,
    policies: PoliciesResource,
):
    request = _request(config, policies)
    store = artefact_store.store()
    with contextlib.ExitStack() as stack:
        handler = build_handlers(
            stack,
            {request.kind},
            store,
            policies.drills(),
            qdrant=qdrant,
            platform_db=platform_db,
            vault=vault,
            backup_policy=policies.backups(),
        )[request.kind]
        if isinstance(handler, Exception):
            raise dg.Failure(f"cannot restore {request.kind} here: {handler}")
        leftovers = remove_leftovers(handler, active_run_ids(context.instance))
        context.log.info(
            f"{request.mode}: {config.target} into {config.destination} on {handler.location()}"
        )
        evidence = restore(handler, store, request, run_id=context.run.run_id)
    record_key, report_key, report = store_restore_evidence(
        store,
        evidence,
        context.run.run_id,
        leftovers,
        config={
            "target": config.target,
            "destination": config.destination,
            "backup_id": config.backup_id,
            "point_in_time": config.point_in_time,
            "dry_run": config.dry_run,
        },
    )
    metadata = {
        "mode": request.mode,
        "result": "verified" if evidence.verified and not evidence.error else "failed",
        "backup_id": (evidence.backup or {}).get("backup_id", "none"),
        "destination": evidence.destination or "none",
        "safety_backup_id": (evidence.safety_backup or {}).get("backup_id", "none"),
        "destination_after": str(evidence.facts.get("destination_after", "unchanged")),
        "record_path": dg.MetadataValue.path(store.location(record_key)),
        "report_path": dg.MetadataValue.path(store.location(report_key)),
        "report": dg.MetadataValue.md(report),
        **(
            {"rto_seconds": dg.MetadataValue.float(evidence.rto_seconds)}
            if evidence.rto_seconds is not None
            else {}
        ),
        **(
            {"rpo_hours": dg.MetadataValue.float(round(evidence.rpo_seconds / 3600, 3))}
            if evidence.rpo_seconds is not None
            else {}
        ),
    }
    if evidence.error or not evidence.verified:
        after = evidence.facts.get("destination_after")
        note = f" Destination {config.destination} now: {after}." if after else ""
        raise dg.Failure(
            description=f"{request.mode} of {config.target} failed: {evidence.error}{note}",
            metadata=metadata,
        )
    context.log.info(f"{request.mode} verified; report at {store.location(report_key)}")
    yield dg.Output(None, metadata=metadata)


@dg.job(
    name="restore_job",
    tags={"gsv/domain": "drills"},
    description="The real restore (docs/drills.md, Disaster recovery): run config names the "
    "target, the backup (newest by default, or an id, or a point in time) and the destination. "
    "Refuses "
    "without `confirm`; `dry_run` only verifies. Safety backup first, then restore and verify.",
)
def restore_job():
    restore_op()
