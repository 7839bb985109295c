"""The `scanning` group's view of what runs: the deployed images of each day, and the daily risk
report of those images against their latest scans."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from gsv_pipelines.defs.scanning.partitions import DAILY
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.workloads import WorkloadsResource

OWNERS = ["team:platform"]
IMAGE_SCAN = dg.AssetKey(["scanning", "image_scan"])
# The UI renders metadata, not documents: beyond this the report is cut, with its path.
MARKDOWN_LIMIT = 20_000
TABLE_ROWS = 500

DEPLOYED_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("namespace", "string"),
        dg.TableColumn("workload_kind", "string", description="Deployment, StatefulSet, Pod…"),
        dg.TableColumn("workload", "string"),
        dg.TableColumn("container", "string"),
        dg.TableColumn("container_type", "string", description="container, init or ephemeral"),
        dg.TableColumn("image", "string", description="as the pod spec or inventory writes it"),
        dg.TableColumn("reference", "string", description="pullable by digest"),
        dg.TableColumn("digest", "string", description="manifest digest; null: see note"),
        dg.TableColumn("pod", "string", description="one of the pods merged into the row"),
        dg.TableColumn("pods", "int", description="pods merged into the row"),
        dg.TableColumn("note", "string", description="why the digest is missing"),
        dg.TableColumn("observed_at", "timestamp"),
    ]
)
FINDINGS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("namespace", "string"),
        dg.TableColumn("workload_kind", "string"),
        dg.TableColumn("workload", "string"),
        dg.TableColumn("container", "string"),
        dg.TableColumn("digest", "string"),
        dg.TableColumn("kind", "string", description="vulnerability or secret"),
        dg.TableColumn("id", "string", description="vulnerability id or secret rule"),
        dg.TableColumn("package", "string"),
        dg.TableColumn("target", "string"),
        dg.TableColumn("severity", "string"),
        dg.TableColumn("fixable", "bool"),
        dg.TableColumn("installed_version", "string"),
        dg.TableColumn("fixed_version", "string"),
        dg.TableColumn("title", "string"),
        dg.TableColumn("start_line", "int"),
        dg.TableColumn("fails_policy", "bool"),
        dg.TableColumn("policy_note", "string"),
        dg.TableColumn("new", "bool", description="absent from the previous day's report"),
        dg.TableColumn("key", "string"),
    ]
)
# The verdict and its counts before the image, whose name can be long.
WORKLOADS_TABLE = dg.TableSchema(
    columns=[
        dg.TableColumn("namespace", "string"),
        dg.TableColumn("workload", "string"),
        dg.TableColumn("container", "string"),
        dg.TableColumn("verdict", "string"),
        dg.TableColumn("critical", "int"),
        dg.TableColumn("high", "int"),
        dg.TableColumn("fixable", "int"),
        dg.TableColumn("secrets", "int"),
        dg.TableColumn("new", "int"),
        dg.TableColumn("image", "string"),
    ]
)


@dg.asset(
    key=["scanning", "deployed_images"],
    group_name="scanning",
    partitions_def=DAILY,
    owners=OWNERS,
    kinds={"kubernetes", "parquet"},
    tags={"gsv/domain": "scanning"},
)
def deployed_images(
    context: dg.AssetExecutionContext,
    workloads: WorkloadsResource,
    artefact_store: ArtefactStoreResource,
) -> dg.MaterializeResult:
    """The image digests that run, on the partition's day: the Running and Pending pods' imageIDs
    through the Kubernetes API in prod, the inventory file GSV_IMAGE_INVENTORY locally (absent:
    nothing deployed). One row per namespace, workload, container and digest; a container whose
    runtime recorded no manifest digest is kept, with a note. Stored whole or not at all as
    `scanning/deployed/<day>.parquet`. A past day already stored is kept as observed then (the
    cluster of today is not that day's); today's is replaced on every run."""
    # Imported here: pandas and pyarrow load slowly, and only runs need them.
    from gsv_pipelines.lib.scanning import deployed as lib

    day = context.partition_key
    store = artefact_store.store()
    key = lib.deployed_key(day)
    kept = day < datetime.now(UTC).date().isoformat() and store.exists(key)
    if kept:
        frame = lib.read_frame(store, key)
        stored = store.hash(key)
        context.log.info(f"{store.location(key)} already holds {day}: kept as it was observed")
    else:
        frame = workloads.deployed_images()
        stored = lib.write_frame(store, key, frame)
    observed = frame["observed_at"].min() if len(frame) else None
    if observed is not None and observed.date().isoformat() != day:
        context.log.warning(f"the deployed images of {day} were observed on {observed.date()}")

    digests = frame["digest"].dropna()
    metadata = {
        "source": workloads.describe_source() if not kept else f"kept: {store.location(key)}",
        "path": dg.MetadataValue.path(store.location(key)),
        "sha256": stored.sha256,
        "bytes": dg.MetadataValue.int(stored.size),
        "rows": dg.MetadataValue.int(len(frame)),
        "images": dg.MetadataValue.int(int(frame["image"].nunique())),
        "digests": dg.MetadataValue.int(int(digests.nunique())),
        "namespaces": dg.MetadataValue.int(int(frame["namespace"].nunique())),
        "workloads": dg.MetadataValue.int(
            len(frame[["namespace", "workload_kind", "workload"]].drop_duplicates())
        ),
        "rows_without_digest": dg.MetadataValue.int(int(frame["digest"].isna().sum())),
        "observed_at": str(observed) if observed is not None else "nothing deployed",
        "deployed": dg.MetadataValue.md(
            lib.deployed_markdown(frame) if len(frame) else "No deployed images."
        ),
        "dagster/column_schema": DEPLOYED_SCHEMA,
    }
    context.log.info(
        f"{len(frame)} rows, {digests.nunique()} digests, "
        f"{frame['digest'].isna().sum()} without digest, from {metadata['source']}"
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["scanning", "image_risk_report"],
    group_name="scanning",
    partitions_def=DAILY,
    deps=[
        deployed_images,
        # Lineage only: the scans are read from the store, each digest's latest.
        dg.AssetDep(IMAGE_SCAN, partition_mapping=dg.AllPartitionMapping()),
    ],
    owners=OWNERS,
    kinds={"trivy", "parquet", "markdown"},
    tags={"gsv/domain": "scanning"},
)
def image_risk_report(
    context: dg.AssetExecutionContext,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.MaterializeResult:
    """Which running images carry which risk, per namespace and workload: each deployed container
    of the day against its digest's latest scan (or "not scanned"), with counts by severity,
    fixable vulnerabilities, embedded secrets (rule and place only, never their text), the
    verdicts of no_fixable_critical and no_embedded_secrets under the current scan policy as of
    the day, and the findings new since the previous day's report (first report: all new).
    Stored in `scanning/risk/<day>/`: report.md, findings.parquet, summary.json (written last)."""
    from gsv_pipelines.lib.scanning import deployed as lib
    from gsv_pipelines.lib.scanning.store import latest_scan, read_frame

    day = context.partition_key
    previous_day = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    store = artefact_store.store()
    deployed_key = lib.deployed_key(day)
    if not store.exists(deployed_key):
        raise dg.Failure(
            description=f"no deployed images of {day} ({store.location(deployed_key)}): "
            f"materialize scanning/deployed_images for {day} first"
        )
    deployed = lib.read_frame(store, deployed_key)
    policy = policies.scanning()
    scans: dict[str, lib.ScanFindings | None] = {}
    for digest in sorted(set(deployed["digest"].dropna())):
        record = latest_scan(store, digest)
        scans[digest] = (
            None
            if record is None
            else lib.ScanFindings(
                record=record,
                vulnerabilities=read_frame(store, record, "vulnerabilities"),
                secrets=read_frame(store, record, "secrets"),
            )
        )
    previous = lib.read_risk_findings(store, previous_day)
    report = lib.build_risk_report(day, deployed, scans, policy, previous_day, previous)
    totals = report.totals
    markdown = lib.risk_markdown(report)

    report_key = lib.risk_key(day, "report.md")
    findings_key = lib.risk_key(day, "findings.parquet")
    lib.write_text(store, report_key, markdown)
    findings = lib.write_frame(store, findings_key, report.findings)
    summary = {
        "day": day,
        "previous_day": previous_day,
        "first_report": previous is None,
        "policy_source": policy.source,
        "policy_sha256": policy.sha256,
        "deployed": deployed_key,
        "report": report_key,
        "findings": findings_key,
        "findings_sha256": findings.sha256,
        "totals": totals,
    }
    store.write_json_atomic(lib.risk_key(day, "summary.json"), summary)

    if len(markdown) > MARKDOWN_LIMIT:
        cut = markdown.rfind("\n", 0, MARKDOWN_LIMIT)
        markdown = (
            markdown[:cut] + f"\n\n*Trimmed here: the whole report is {store.location(report_key)}*"
        )
    rows = report.workloads.head(TABLE_ROWS).to_dict("records")
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "namespace": r["namespace"],
                    "workload": f"{r['workload_kind']}/{r['workload']}",
                    "container": r["container"],
                    "verdict": r["verdict"],
                    **{k: int(r[k]) for k in ("critical", "high", "fixable", "secrets", "new")},
                    "image": lib.display_image(r["image"]),
                }
            )
            for r in rows
        ],
        schema=WORKLOADS_TABLE,
    )
    context.log.info(
        f"{totals['containers']} containers: {totals['failing']} failing, "
        f"{totals['not_scanned']} not scanned, {totals['new_findings']} new findings"
    )
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "workloads_table": table,
            **{name: dg.MetadataValue.int(value) for name, value in totals.items()},
            "first_report": dg.MetadataValue.bool(previous is None),
            "previous_day": previous_day,
            "policy_sha256": policy.sha256,
            "report_path": dg.MetadataValue.path(store.location(report_key)),
            "findings_path": dg.MetadataValue.path(store.location(findings_key)),
            "dagster/column_schema": FINDINGS_SCHEMA,
        }
    )
