"""The `drills` group: DR drills that restore the backups of the `backups` group into scratch
copies, prove them, and measure RTO and RPO; and the drill's report for auditors."""

import contextlib
import os

import dagster as dg

from gsv_pipelines.defs.backups.assets import platform_db_backup, qdrant_backup, vault_snapshot
from gsv_pipelines.defs.backups.partitions import COLLECTIONS, DAILY
from gsv_pipelines.defs.partitioned_checks import partitioned_check_spec
from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.backups.policy import BackupPolicy
from gsv_pipelines.lib.core import pod_sizes
from gsv_pipelines.lib.core.settings import load_settings
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.policy import DrillPolicy, DrillPolicyError, load_drill_policy
from gsv_pipelines.lib.drills.report import store_drill_report, summary_rows
from gsv_pipelines.lib.drills.run import drill_targets, run_drill, save_record
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.vault import VaultResource

OWNERS = ["team:platform"]
TAGS = {"gsv/domain": "drills"}
DR_DRILL = dg.AssetKey(["drills", "dr_drill"])
DR_REPORT = dg.AssetKey(["drills", "dr_report"])
RTO_WITHIN_TARGET = "rto_within_target"
RPO_WITHIN_TARGET = "rpo_within_target"
DRILL_VERIFIED = "drill_verified"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def drilled_backups() -> list[dg.AssetsDefinition]:
    """The backup assets the drill policy (GSV_DRILL_POLICY, else the shipped one) restores:
    dr_drill's lineage. An unreadable policy keeps all three; the drill's run then says why."""
    backup_of = {
        "qdrant": qdrant_backup,
        "platform_db": platform_db_backup,
        "vault": vault_snapshot,
    }
    try:
        policy = load_drill_policy(load_settings().drill_policy)
    except DrillPolicyError:
        return list(backup_of.values())
    return [asset for kind, asset in backup_of.items() if getattr(policy, kind) is not None]


def active_run_ids(instance: dg.DagsterInstance) -> set[str]:
    """Runs that may still own scratch copies: the others' copies are leftovers."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    return {record.dagster_run.run_id for record in records}


def build_handlers(
    stack: contextlib.ExitStack,
    kinds: set[str],
    store: ArtefactStore,
    policy: DrillPolicy,
    *,
    qdrant: QdrantResource,
    platform_db: DatabaseResource,
    vault: VaultResource,
    backup_policy: BackupPolicy,
) -> dict:
    """A restore handler per kind; the error instead where one cannot be had (an unreachable
    server fails that kind's targets, not the whole drill). Embedded Qdrant is opened once, in
    `stack`: it admits one client per folder, and sources and copies live in the same one."""
    from gsv_pipelines.lib.drills.platform_db import handler_for
    from gsv_pipelines.lib.drills.qdrant import QdrantHandler
    from gsv_pipelines.lib.drills.vault import VaultHandler

    handlers: dict = {}
    if backups.QDRANT in kinds:
        try:
            client = stack.enter_context(qdrant.open())
            options = policy.qdrant
            handlers[backups.QDRANT] = QdrantHandler(
                client,
                store,
                server_url=qdrant.url,
                api_key=qdrant.api_key,
                batch_size=backup_policy.defaults.batch_size,
                safety_policy=backup_policy.defaults,
                **(
                    {
                        "compare_all_up_to": options.compare_all_up_to,
                        "sample_size": options.sample_size,
                        "seed": options.seed,
                    }
                    if options
                    else {}
                ),
            )
        except Exception as exc:
            handlers[backups.QDRANT] = exc
    if backups.PLATFORM_DB in kinds:
        try:
            handlers[backups.PLATFORM_DB] = handler_for(
                platform_db.url, store, policy.scratch_dir, backup_policy.platform_db
            )
        except Exception as exc:
            handlers[backups.PLATFORM_DB] = exc
    if backups.VAULT in kinds:
        variable = policy.vault.unseal_keys_env if policy.vault else None
        keys = os.environ.get(variable, "") if variable else ""

        def login(addr: str):
            return VaultResource(
                addr=addr,
                token=vault.token,
                role_id=vault.role_id,
                secret_id=vault.secret_id,
                k8s_role=vault.k8s_role,
            ).client()

        handlers[backups.VAULT] = VaultHandler(
            vault.client,
            store,
            policy.scratch_dir,
            backup_policy.vault,
            login=login,
            unseal_keys=tuple(k.strip() for k in keys.split(",") if k.strip()),
        )
    return handlers


def _figures(record) -> dict:
    metadata = {}
    for t in record.targets:
        if t.rto_seconds is not None:
            metadata[f"{t.label} rto_seconds"] = dg.MetadataValue.float(t.rto_seconds)
        if t.rpo_seconds is not None:
            metadata[f"{t.label} rpo_hours"] = dg.MetadataValue.float(
                round(t.rpo_seconds / 3600, 3)
            )
    rtos = [t.rto_seconds for t in record.targets if t.rto_seconds is not None]
    rpos = [t.rpo_seconds for t in record.targets if t.rpo_seconds is not None]
    if rtos:
        metadata["rto_seconds_max"] = dg.MetadataValue.float(max(rtos))
    if rpos:
        metadata["rpo_hours_max"] = dg.MetadataValue.float(round(max(rpos) / 3600, 3))
    return metadata


def _judgements(record) -> list[dg.AssetCheckResult]:
    def described(ok: bool, what: str, failing: list[str]) -> str:
        return f"every target {what}" if ok else "; ".join(failing) or "no targets"

    slow = [
        f"{t.label}: "
        + ("not verified" if t.rto_seconds is None else f"RTO {t.rto_seconds:.1f} s")
        + f", target {t.rto_target_seconds:.0f} s"
        for t in record.targets
        if not t.rto_ok
    ]
    stale = [
        f"{t.label}: "
        + ("no backup" if t.rpo_seconds is None else f"RPO {t.rpo_seconds / 3600:.1f} h")
        + f", target {t.rpo_target_seconds / 3600:g} h"
        for t in record.targets
        if not t.rpo_ok
    ]
    failed = [f"{t.label}: {t.error}" for t in record.targets if not t.verified or t.error]
    return [
        dg.AssetCheckResult(
            check_name=RTO_WITHIN_TARGET,
            passed=record.rto_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            description=described(record.rto_ok, "restored and verified within its RTO", slow),
            metadata=_figures(record),
        ),
        dg.AssetCheckResult(
            check_name=RPO_WITHIN_TARGET,
            passed=record.rpo_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            description=described(record.rpo_ok, "restored from a backup within its RPO", stale),
        ),
        dg.AssetCheckResult(
            check_name=DRILL_VERIFIED,
            passed=record.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=described(record.passed, "restored and verified", failed),
        ),
    ]


@dg.asset(
    key=DR_DRILL,
    group_name="drills",
    partitions_def=DAILY,
    # Lineage: the backups the drill policy restores. A day of the drill maps to that day of
    # every backup (qdrant_backup's "day" dimension); the drill itself restores the newest of each.
    deps=drilled_backups(),
    owners=OWNERS,
    kinds={"qdrant", "postgres", "vault"},
    tags=TAGS,
    op_tags=pod_sizes.DRILL,
    check_specs=[
        partitioned_check_spec(
            RTO_WITHIN_TARGET,
            partitions_def=DAILY,
            asset=DR_DRILL,
            blocking=True,
            description="Every target was restored and verified within its RTO (drill policy).",
        ),
        partitioned_check_spec(
            RPO_WITHIN_TARGET,
            partitions_def=DAILY,
            asset=DR_DRILL,
            blocking=True,
            description="Every target's restored backup was within its RPO at the drill's "
            "start; a target without a backup fails.",
        ),
        partitioned_check_spec(
            DRILL_VERIFIED,
            partitions_def=DAILY,
            asset=DR_DRILL,
            blocking=True,
            description="Every target's scratch copy equals its backup: checksums, counts, "
            "points or table checksums, sample queries.",
        ),
    ],
)
def dr_drill(
    context: dg.AssetExecutionContext,
    qdrant: QdrantResource,
    artefact_store: ArtefactStoreResource,
    platform_db: DatabaseResource,
    vault: VaultResource,
    policies: PoliciesResource,
) -> dg.MaterializeResult:
    """A DR drill: the newest backup of every target of the drill policy (each known Qdrant
    collection, the platform database, Vault) re-verified against its checksums, restored into a
    scratch copy (never the source) by the same code restore_job runs, proven equal to what was
    backed up, and dropped. Records RTO (start of restore to verified) and RPO (drill start minus
    the backup's consistency point) per target; the checks judge them against the policy.
    Scratch copies left by killed drills are removed first. The record and its report are
    written before the checks judge; the checks are blocking, so a drill in which any target
    fails ends its run failed."""
    policy = policies.drills()
    store = artefact_store.store()
    collections = context.instance.get_dynamic_partitions(COLLECTIONS.name)
    database = backups.database_name(platform_db.url) if policy.platform_db else None
    targets = drill_targets(policy, collections, database)
    with contextlib.ExitStack() as stack:
        handlers = build_handlers(
            stack,
            {t.kind for t in targets},
            store,
            policy,
            qdrant=qdrant,
            platform_db=platform_db,
            vault=vault,
            backup_policy=policies.backups(),
        )
        record = run_drill(
            handlers,
            store,
            targets,
            run_id=context.run.run_id,
            active_run_ids=active_run_ids(context.instance),
            policy_source=policy.source,
        )
    key = save_record(store, record)
    # The report is written before the checks judge: a failed drill is reported too.
    _, report, _ = store_drill_report(store, key)
    for line in record.leftovers_removed:
        context.log.info(line)
    for t in record.targets:
        outcome = "verified" if t.verified else f"FAILED: {t.error}"
        rto = "n/a" if t.rto_seconds is None else f"{t.rto_seconds:.1f} s"
        rpo = "n/a" if t.rpo_seconds is None else f"{t.rpo_seconds / 3600:.2f} h"
        context.log.info(f"{t.label}: {outcome}; RTO {rto}, RPO {rpo}")
    context.log.info(f"drill report written to {store.location(report.key)}")
    return dg.MaterializeResult(
        metadata={
            "drill_id": record.drill_id,
            "result": "passed" if record.passed and record.rto_ok and record.rpo_ok else "failed",
            "record_path": dg.MetadataValue.path(store.location(key)),
            "record_key": key,
            "report_path": dg.MetadataValue.path(store.location(report.key)),
            "targets": dg.MetadataValue.int(len(record.targets)),
            "targets_failed": dg.MetadataValue.int(
                sum(not t.verified or bool(t.error) for t in record.targets)
            ),
            "leftovers_removed": dg.MetadataValue.int(len(record.leftovers_removed)),
            **_figures(record),
            "summary": dg.MetadataValue.md("\n".join(summary_rows(record.targets))),
        },
        # Blocking: a drill with any failing target fails its run, after this evidence and
        # the report are recorded, so schedules, the CLI and alerts see the failure.
        check_results=_judgements(record),
    )


@dg.asset(
    key=DR_REPORT,
    group_name="drills",
    partitions_def=DAILY,
    deps=[dr_drill],
    owners=OWNERS,
    kinds={"markdown"},
    tags=TAGS,
)
def dr_report(
    context: dg.AssetExecutionContext, artefact_store: ArtefactStoreResource
) -> dg.MaterializeResult:
    """The drill's evidence as a markdown report an auditor accepts: every target, the backup
    used with its checksums, every check with what it found, RTO and RPO against their targets,
    pass or fail, and what was cleaned up. Stored next to the drill record (whose SHA-256 it
    cites) in the artefact store, and shown here. dr_drill writes the same report first (the
    same record renders the same bytes), so a failed drill, which stops its run before this
    asset, is reported too."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DR_DRILL, asset_partitions=[context.partition_key]),
        limit=1,
    ).records
    if not records:
        raise dg.Failure(f"no drill recorded for {context.partition_key}: materialize dr_drill")
    key = records[0].asset_materialization.metadata["record_key"].value
    store = artefact_store.store()
    record, stored, report = store_drill_report(store, key)
    context.log.info(f"drill report written to {store.location(stored.key)}")
    return dg.MaterializeResult(
        metadata={
            "drill_id": record.drill_id,
            "result": "passed" if record.passed and record.rto_ok and record.rpo_ok else "failed",
            "report_path": dg.MetadataValue.path(store.location(stored.key)),
            "report_sha256": stored.sha256,
            "report": dg.MetadataValue.md(report),
        }
    )
