"""The `rotation` group: an inventory of the platform's secrets and their verified rotation."""

from datetime import UTC, datetime

import dagster as dg

from gsv_pipelines.defs.automation import schedule_status
from gsv_pipelines.defs.sources import vault_storage
from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.settings import load_settings
from gsv_pipelines.lib.rotation import rotate as rotation
from gsv_pipelines.lib.rotation.policy import RotationPolicy, load_rotation_policy
from gsv_pipelines.resources.kubernetes import KubernetesResource
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.vault import VaultResource

OWNERS = ["team:platform"]
SECRET_AGE_WITHIN_POLICY = "secret_age_within_policy"
INVENTORY = dg.AssetKey(["rotation", "secret_inventory"])


class RotationConfig(dg.Config):
    """`force: true` rotates now, whatever the secret's age (the manual "rotate now" path)."""

    force: bool = False


def _statuses(vault: VaultResource, policy: RotationPolicy, now: datetime):
    """Each secret's status; a secret that cannot be read (missing, forbidden) gets its error."""
    client = vault.client()
    statuses, errors = [], {}
    for secret in policy.secrets:
        try:
            statuses.append(rotation.status(client, secret, now))
        except vault_kv.SecretMissing as exc:
            errors[secret.name] = str(exc)
    return statuses, errors


INVENTORY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("secret", "string"),
        dg.TableColumn("kind", "string"),
        dg.TableColumn("version", "int"),
        dg.TableColumn("age_days", "float"),
        dg.TableColumn("due", "string"),
        dg.TableColumn("overdue", "bool"),
        dg.TableColumn("previous_valid_until", "string"),
        dg.TableColumn("problem", "string"),
    ]
)


def _inventory_table(rows, errors: dict[str, str]) -> dg.MetadataValue:
    records = [
        dg.TableRecord(
            {
                "secret": r.name,
                "kind": r.kind,
                "version": int(r.version),
                "age_days": round(float(r.age_days), 2),
                "due": r.due_at.date().isoformat(),
                "overdue": bool(r.overdue),
                "previous_valid_until": r.grace_ends_at.isoformat(timespec="minutes")
                if r.grace_ends_at
                else "",
                "problem": "",
            }
        )
        for r in rows
    ]
    records += [
        dg.TableRecord({"secret": name, "problem": f"unreadable: {error}"})
        for name, error in errors.items()
    ]
    return dg.MetadataValue.table(records=records, schema=INVENTORY_SCHEMA)


def _rotate_one(client, secret, force: bool, kubernetes: KubernetesResource) -> rotation.Outcome:
    outcome = rotation.rotate(client, secret, force=force)
    consumers = secret.consumers
    if outcome.action == "rotated" and (consumers.external_secrets or consumers.deployments):
        from gsv_pipelines.lib.rotation.consumers import notify_consumers

        custom_api, apps_api = kubernetes.apis()
        journal = rotation.Journal()
        # The new value is in Vault either way; a consumer that was not reached fails the run
        # loudly, so that someone resyncs it before the previous value is retired.
        notify_consumers(
            consumers,
            custom_api=custom_api,
            apps_api=apps_api,
            now=datetime.now(UTC),
            record=journal.record,
        )
        outcome.steps += journal.steps
    return outcome


def _outcome_metadata(outcomes: list[rotation.Outcome]) -> dict:
    if len(outcomes) == 1:
        [outcome] = outcomes
        steps = "\n".join(
            f"| {s.name} | {s.at} | {', '.join(f'{k}={v}' for k, v in s.facts.items())} |"
            for s in outcome.steps
        )
        return {
            "action": outcome.action,
            "reason": outcome.reason,
            "kind": outcome.kind,
            "version_before": dg.MetadataValue.int(outcome.version_before or 0),
            "version_after": dg.MetadataValue.int(
                outcome.version_after or outcome.version_before or 0
            ),
            "steps": dg.MetadataValue.md("| step | at | facts |\n|---|---|---|\n" + steps),
        }
    actions = sorted({o.action for o in outcomes})
    rows = "\n".join(
        f"| {o.secret} | {o.action} | {o.version_before} | {o.version_after or ''} |"
        for o in outcomes
    )
    return {
        "secrets": dg.MetadataValue.int(len(outcomes)),
        **{
            a.replace(" ", "_"): dg.MetadataValue.int(sum(o.action == a for o in outcomes))
            for a in actions
        },
        "outcomes": dg.MetadataValue.md(
            "| secret | action | version before | after |\n|---|---|---|---|\n" + rows
        ),
    }


def build_rotation_defs(policy: RotationPolicy) -> dg.Definitions:
    """The group's definitions for the secrets `policy` lists (one partition per secret)."""
    secrets = dg.StaticPartitionsDefinition(policy.names)

    @dg.asset(
        key=INVENTORY,
        group_name="rotation",
        deps=[vault_storage],
        owners=OWNERS,
        kinds={"vault"},
        tags={"gsv/domain": "rotation"},
    )
    def secret_inventory(vault: VaultResource, policies: PoliciesResource) -> dg.MaterializeResult:
        """Every secret of the rotation policy: its current version, age (from KV metadata),
        due date and overdue flag, and whether a previous value is still in its grace period.
        Never a value."""
        rows, errors = _statuses(vault, policies.rotation(), datetime.now(UTC))
        return dg.MaterializeResult(
            metadata={
                "secrets": dg.MetadataValue.int(len(rows) + len(errors)),
                "unreadable": dg.MetadataValue.int(len(errors)),
                "overdue": dg.MetadataValue.int(sum(r.overdue for r in rows)),
                "in_grace": dg.MetadataValue.int(sum(r.grace_ends_at is not None for r in rows)),
                "oldest_age_days": dg.MetadataValue.float(
                    max((r.age_days for r in rows), default=0)
                ),
                "inventory": _inventory_table(rows, errors),
                "versions": dg.MetadataValue.json({r.name: r.version for r in rows}),
                "age_days": dg.MetadataValue.json({r.name: r.age_days for r in rows}),
            }
        )

    @dg.asset_check(
        asset=secret_inventory,
        name=SECRET_AGE_WITHIN_POLICY,
        description="No secret is older than the max_age_days of the rotation policy.",
    )
    def secret_age_within_policy(
        vault: VaultResource, policies: PoliciesResource
    ) -> dg.AssetCheckResult:
        rows, errors = _statuses(vault, policies.rotation(), datetime.now(UTC))
        overdue = [r for r in rows if r.overdue]
        problems = [
            f"{r.name}: {r.age_days:.1f} days old, due {r.due_at.date().isoformat()}"
            for r in overdue
        ] + [f"{name}: {error}" for name, error in errors.items()]
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems) or f"all {len(rows)} secrets within policy",
            metadata={
                "overdue": dg.MetadataValue.int(len(overdue)),
                "overdue_secrets": ", ".join(r.name for r in overdue) or "none",
            },
        )

    @dg.asset(
        key=["rotation", "rotated_secret"],
        group_name="rotation",
        partitions_def=secrets,
        deps=[secret_inventory],
        owners=OWNERS,
        kinds={"vault"},
        tags={"gsv/domain": "rotation"},
        # One rotation at a time (dagster.yaml: pools.default_limit 1): a secret's rotations
        # never overlap, and CAS refuses any other writer.
        pool="secret_rotation",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def rotated_secret(
        context: dg.AssetExecutionContext,
        config: RotationConfig,
        vault: VaultResource,
        policies: PoliciesResource,
        kubernetes: KubernetesResource,
    ) -> dg.MaterializeResult:
        """One secret run through its kind's state machine: retired past its grace period,
        rotated when due (or forced) and verified end to end, or left alone. Every step is in
        the metadata (never a value); a failure after a change is rolled back and fails the run.
        After a rotation, the secret's consumers are nudged: ExternalSecrets resynced, then
        Deployments restarted. A backfill runs many secrets in one run, each on its own.
        """
        policy, client = policies.rotation(), vault.client()
        outcomes, failures = [], []
        # One secret per run from the schedule or "rotate now"; a backfill runs them all in one.
        for name in context.partition_keys:
            try:
                outcome = _rotate_one(client, policy.get(name), config.force, kubernetes)
            except Exception as exc:
                # The rotator has rolled back; go on with the others, then fail the run.
                failures.append(f"{name}: {exc}")
                context.log.error(f"{name}: {exc}")
                continue
            context.log.info(f"{name}: {outcome.action} ({outcome.reason})")
            outcomes.append(outcome)
        if failures:
            raise dg.Failure(
                description=f"{len(failures)} of {len(context.partition_keys)} secrets failed: "
                + "; ".join(failures),
                metadata={"done": ", ".join(f"{o.secret}: {o.action}" for o in outcomes)},
            )
        return dg.MaterializeResult(metadata=_outcome_metadata(outcomes))

    rotation_job = dg.define_asset_job(
        "rotation_job",
        selection=dg.AssetSelection.assets(rotated_secret),
        description="Rotate (or retire, or leave alone) one secret; config force=true rotates now.",
    )
    inventory_job = dg.define_asset_job(
        "secret_inventory_job",
        selection=dg.AssetSelection.assets(secret_inventory),
        description="Refresh the inventory of secrets and check their ages.",
    )
    status = schedule_status()

    @dg.schedule(
        job=rotation_job,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        default_status=status,
        description="Daily: a run for each secret that is due, or whose grace period is over.",
    )
    def rotation_schedule(context: dg.ScheduleEvaluationContext, vault: VaultResource):
        now = context.scheduled_execution_time or datetime.now(UTC)
        statuses, errors = _statuses(vault, policy, now)
        # An unreadable secret gets a run too: its failure then shows where people look.
        names = [s.name for s in statuses if s.needs_run(now)] + list(errors)
        day = now.strftime("%Y-%m-%d")
        requests = [
            dg.RunRequest(run_key=f"{name}:{day}", partition_key=name, tags={"gsv/secret": name})
            for name in names
        ]
        return requests or dg.SkipReason("no secret is due or past its grace period")

    inventory_schedule = dg.ScheduleDefinition(
        name="secret_inventory_schedule",
        job=inventory_job,
        cron_schedule="30 * * * *",
        execution_timezone="UTC",
        default_status=status,
        description="Hourly: the inventory and secret_age_within_policy stay current.",
    )
    return dg.Definitions(
        assets=[secret_inventory, rotated_secret],
        asset_checks=[secret_age_within_policy],
        jobs=[rotation_job, inventory_job],
        schedules=[rotation_schedule, inventory_schedule],
    )


@dg.definitions
def rotation_defs() -> dg.Definitions:
    return build_rotation_defs(load_rotation_policy(load_settings().rotation_policy))
