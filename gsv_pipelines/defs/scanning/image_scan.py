"""`scanning/image_scan`: one Trivy scan per image digest, and the two gates on its findings."""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from gsv_pipelines.defs.partitioned_checks import (
    partitioned_asset_check,
    per_partition,
    run_partition,
)
from gsv_pipelines.defs.scanning.assets import OWNERS, trivy_db
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.defs.sources import vault_storage
from gsv_pipelines.lib.core import pod_sizes
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning import store as scan_store
from gsv_pipelines.lib.scanning.artifacts import artifact_kind
from gsv_pipelines.lib.scanning.policy import (
    ScanPolicy,
    Verdict,
    secret_verdict,
    vulnerability_verdict,
)
from gsv_pipelines.lib.scanning.registries import RegistryConfig, registry_for
from gsv_pipelines.lib.scanning.registry_client import RegistryClient, RegistryError
from gsv_pipelines.lib.scanning.store import image_name
from gsv_pipelines.lib.scanning.trivy import TrivyError
from gsv_pipelines.lib.scanning.trivy_report import (
    SEVERITIES,
    VULNERABILITY_COLUMNS,
    TrivyReportError,
    parse_report,
)
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource
from gsv_pipelines.resources.vault import VaultResource

if TYPE_CHECKING:
    import pandas as pd

NO_FIXABLE_CRITICAL = "no_fixable_critical"
NO_EMBEDDED_SECRETS = "no_embedded_secrets"

DIGEST = re.compile(r"^[a-z0-9]+:[0-9a-f]{32,}$")
# host[:port]/repository[:tag]@digest; the host is what Docker would take for one.
REGISTRY_REFERENCE = re.compile(
    r"^(?P<host>localhost|[^/@\s]*[.:][^/@\s]*)"
    r"/(?P<repository>[a-z0-9][^@\s]*)@(?P<digest>\S+)$"
)
OCI_PREFIX = "oci:"
# Image scans at once, across all runs: its limit is set on the instance (`gsv demo`/`gsv dev`
# set GSV_SCAN_CONCURRENCY; elsewhere `dagster instance concurrency set trivy_scan <n>`).
SCAN_POOL = "trivy_scan"
TOP_FINDINGS = 10
TABLE_ROWS = 50


class ImageScanConfig(dg.Config):
    reference: str = Field(
        default="",
        description="The image to scan: `host[:port]/repository@<the partition's digest>`, or "
        "`oci:<path of an OCI layout>` whose index holds that digest. Empty: the reference of "
        "the digest's last scan, else of the newest deployed-images inventory.",
    )
    image: str = Field(
        default="",
        description="The image as people name it (`repository:tag` as pushed), shown with the "
        "scan and its checks. Empty: the last scan's, else a short form of the reference.",
    )
    force: bool = Field(
        default=False,
        description="Scan even when the last scan used the current DB and policy.",
    )


@dataclass(frozen=True)
class _Target:
    """What Trivy is given for one image, and how."""

    reference: str  # as recorded: host/repo@digest or oci:<path>
    trivy_image: str
    layout: bool = False
    registry: RegistryConfig | None = None

    def describe(self) -> str:
        if self.layout:
            return "an OCI layout"
        if self.registry is None:
            return f"{self.reference.split('/', 1)[0]} (not in GSV_REGISTRIES: anonymous)"
        return f"registry {self.registry.name}"


def _resolve(reference: str, digest: str, registries: RegistriesResource) -> _Target:
    """Check that `reference` names exactly the partition's digest; where Trivy finds it."""
    if reference.startswith(OCI_PREFIX):
        path, at, named = reference.removeprefix(OCI_PREFIX).rpartition("@")
        if not at or not DIGEST.match(named):
            path = reference.removeprefix(OCI_PREFIX)
        elif named != digest:
            raise dg.Failure(
                description=f"{reference} names {named}, not this partition's digest {digest}"
            )
        layout = Path(path).expanduser().absolute()
        try:
            index = json.loads((layout / "index.json").read_text())
            held = {entry["digest"] for entry in index["manifests"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise dg.Failure(
                description=f"{reference} is not a readable OCI layout "
                f"({type(exc).__name__}: {exc}); nothing was scanned"
            ) from None
        if digest not in held:
            raise dg.Failure(
                description=f"the OCI layout {layout} does not hold {digest} (its index lists "
                f"{', '.join(sorted(held)) or 'nothing'}); nothing was scanned"
            )
        return _Target(f"{OCI_PREFIX}{layout}@{digest}", f"{layout}@{digest}", layout=True)

    match = REGISTRY_REFERENCE.match(reference)
    if not match:
        raise dg.Failure(
            description=f"{reference!r} is not an image reference by digest: give "
            f"host[:port]/repository@{digest} or oci:<path of an OCI layout>"
        )
    if match["digest"] != digest:
        raise dg.Failure(
            description=f"{reference} names {match['digest']}, not this partition's digest "
            f"{digest}: a scan is recorded under the digest it scanned"
        )
    return _Target(reference, reference, registry=registry_for(registries.configs(), reference))


def _not_an_image(target: _Target, digest: str, credentials) -> str | None:
    """What the digest's manifest holds if it is not an image (scanning/artifacts.py), else None:
    Trivy would "scan" a Trivy DB, a signature or an SBOM as an image with nothing in it."""
    if target.layout:
        layout = Path(target.trivy_image.rpartition("@")[0])
        index = json.loads((layout / "index.json").read_text())
        [entry] = [m for m in index["manifests"] if m["digest"] == digest]
        algo, _, hexdigest = digest.partition(":")
        manifest = json.loads((layout / "blobs" / algo / hexdigest).read_text())
        return artifact_kind(manifest, entry.get("mediaType", ""))
    host, _, rest = target.reference.partition("/")
    repository = rest.rpartition("@")[0]
    if target.registry is not None:
        configs = [target.registry]
    else:
        # An unlisted registry is read anonymously: over HTTPS, and on loopback first over plain
        # HTTP (as Trivy does).
        schemes = (
            ["http", "https"] if host.split(":")[0] in ("localhost", "127.0.0.1") else ["https"]
        )
        configs = [RegistryConfig(name=host, url=f"{scheme}://{host}") for scheme in schemes]
    errors = []
    for config in configs:
        try:
            with RegistryClient(config, credentials) as client:
                manifest, content_type = client.manifest(repository, digest)
            break
        except RegistryError as exc:
            errors.append(str(exc))
    else:
        raise dg.Failure(
            description=f"the manifest of {target.reference} cannot be read: "
            + "; ".join(errors)
            + "; nothing was scanned"
        ) from None
    return artifact_kind(manifest, content_type)


def _deployed_reference(store: ArtefactStore, digest: str) -> str | None:
    """Where the newest deployed-images inventory says the digest runs from, if it does."""
    from gsv_pipelines.lib.scanning import deployed

    key = deployed.newest_deployed_key(store)
    if key is None:
        return None
    return deployed.digest_references(deployed.read_frame(store, key)).get(digest)


def _no_reference(digest: str) -> dg.Failure:
    return dg.Failure(
        description=f"{digest} was never scanned and is not in the deployed-images inventory, "
        "so there is no reference to scan it from: "
        "launch the run with config ops: {scanning__image_scan: {config: {reference: "
        f"'<host[:port]/repository>@{digest}' or 'oci:<path of an OCI layout>'}}}}"
    )


def _location(store: ArtefactStore, key: str) -> dg.MetadataValue:
    where = store.location(key)
    if "://" in where and not where.startswith("file://"):
        return dg.MetadataValue.url(where)
    return dg.MetadataValue.path(where.removeprefix("file://"))


def _cell(value) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _findings_markdown(vulnerabilities: "pd.DataFrame", secrets: "pd.DataFrame") -> str:
    """The most severe findings, fixable first. Secrets by rule and file only: never their text."""
    rank = {severity: n for n, severity in enumerate(reversed(SEVERITIES))}
    top = vulnerabilities.assign(
        _rank=vulnerabilities["severity"].map(rank), _unfixable=~vulnerabilities["fixable"]
    ).sort_values(["_rank", "_unfixable", "vulnerability_id", "pkg_name"])
    lines = [
        f"**{len(vulnerabilities)} vulnerabilities, {len(secrets)} secrets**",
        "",
        "| id | package | installed | fixed | severity |",
        "|---|---|---|---|---|",
    ]
    for row in top.head(TOP_FINDINGS).itertuples():
        cells = [
            row.vulnerability_id,
            row.pkg_name,
            row.installed_version,
            row.fixed_version,
            row.severity,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if len(vulnerabilities) > TOP_FINDINGS:
        lines.append(f"\n… and {len(vulnerabilities) - TOP_FINDINGS} more in the report")
    if len(secrets):
        lines += ["", "| secret rule | file | line | severity |", "|---|---|---|---|"]
        for row in secrets.head(TOP_FINDINGS).itertuples():
            cells = [row.rule_id, row.target, row.start_line, row.severity]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _record_metadata(store: ArtefactStore, record: scan_store.ScanRecord) -> dict:
    """What every materialization says, whether it scanned or reused the last scan."""
    metadata: dict = {
        "image": record.image or image_name(record.reference),
        "digest": record.digest,
        "reference": record.reference,
        "scanned_at": record.scanned_at,
    }
    for severity in reversed(SEVERITIES):
        level = severity.lower()
        metadata[f"vulnerabilities_{level}"] = dg.MetadataValue.int(
            record.severity_counts.get(severity, 0)
        )
        metadata[f"fixable_{level}"] = dg.MetadataValue.int(record.fixable_counts.get(severity, 0))
    metadata |= {
        "vulnerabilities": dg.MetadataValue.int(sum(record.severity_counts.values())),
        "secrets": dg.MetadataValue.int(record.secret_count),
        "misconfigurations": dg.MetadataValue.int(record.misconfiguration_count),
        "db_version": dg.MetadataValue.int(record.db_version),
        "db_updated_at": record.db_updated_at,
        "policy_sha256": record.policy_sha256[:12],
        "report": _location(store, record.artefacts["report"]["key"]),
    }
    return metadata


def _findings_metadata(vulnerabilities: "pd.DataFrame", secrets: "pd.DataFrame") -> dict:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, dtype) for name, dtype in VULNERABILITY_COLUMNS.items()]
    )
    return {
        # No dagster/row_count: a clean image's "Row count 0" reads as an empty asset; the
        # counts by severity say what was found.
        "dagster/column_schema": schema,
        "top_findings": dg.MetadataValue.md(_findings_markdown(vulnerabilities, secrets)),
    }


@dg.asset(
    key=["scanning", "image_scan"],
    group_name="scanning",
    owners=OWNERS,
    kinds={"trivy"},
    tags={"gsv/domain": "scanning"},
    partitions_def=IMAGE_DIGESTS,
    # Vault: registry credentials, for the GSV_REGISTRIES entries that keep them there.
    deps=[trivy_db, vault_storage],
    pool=SCAN_POOL,
    op_tags=pod_sizes.SCAN,
)
def image_scan(
    context: dg.AssetExecutionContext,
    config: ImageScanConfig,
    trivy: TrivyResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
    registries: RegistriesResource,
    vault: VaultResource,
) -> dg.MaterializeResult:
    """Trivy's vulnerability and secret scan of one image manifest digest (the partition), from
    its registry (credentials and TLS from GSV_REGISTRIES) or an OCI layout, against the shared
    vulnerability DB. The full report (secrets redacted) and its findings frames go to the
    artefact store under `scanning/images/<digest>/`; the metadata carries counts by severity,
    fixable counts, the DB version and a link to the report. A digest already scanned with the
    current DB and scan policy is not scanned again (unless `force`): the materialization then
    says `scanned: false` and names the scan it reuses."""
    digest = context.partition_key
    if not DIGEST.match(digest):
        raise dg.Failure(description=f"partition {digest!r} is not an image digest (sha256:<hex>)")
    scanner = trivy.trivy()
    store = artefact_store.store()
    policy = policies.scanning()
    # The DB a scan now would use (the scan records the one it did use).
    try:
        db = scanner.db_metadata()
    except TrivyError as exc:
        raise dg.Failure(description=f"{exc}; nothing was scanned") from None
    if db is None:
        raise dg.Failure(
            description=f"no vulnerability DB in {scanner.describe()}: materialize "
            "scanning/trivy_db first; nothing was scanned"
        )
    db_updated_at = str(db.get("UpdatedAt"))
    last = scan_store.latest_scan(store, digest)
    # A reference given is checked even when no scan follows: a wrong one is refused, not ignored.
    given = config.reference.strip()
    target = _resolve(given, digest, registries) if given else None

    if last is not None and not config.force and last.is_current(db_updated_at, policy.sha256):
        context.log.info(
            f"{digest}: scanned at {last.scanned_at} with this DB ({db_updated_at}) and this "
            "policy; not scanned again (force: true to scan anyway)"
        )
        return dg.MaterializeResult(
            metadata={
                "scanned": dg.MetadataValue.bool(False),
                "reused_scan": _location(store, f"{last.prefix}/scan.json"),
                **_record_metadata(store, last),
                **_findings_metadata(
                    scan_store.read_frame(store, last, "vulnerabilities"),
                    scan_store.read_frame(store, last, "secrets"),
                ),
            }
        )

    if target is None:
        known = last.reference if last else _deployed_reference(store, digest)
        if known is None:
            raise _no_reference(digest)
        target = _resolve(known, digest, registries)
    registry = target.registry
    credentials = registries.credentials(registry, vault) if registry else None
    kind = _not_an_image(target, digest, credentials)
    if kind is not None:
        raise dg.Failure(
            description=f"{target.reference} is not an image but a {kind} (by its manifest's "
            "media types): not scanned, nothing was recorded"
        )
    context.log.info(
        f"scanning {target.reference} from {target.describe()} with the DB of {db_updated_at}"
    )
    try:
        run = scanner.scan_image(
            target.trivy_image,
            layout=target.layout,
            # Trivy speaks plain HTTP by itself only to loopback and private addresses.
            insecure_registry=bool(registry and (not registry.tls_verify or registry.plain_http)),
            credentials=credentials,
            scanners="vuln,secret",
        )
        report = parse_report(run.report)
    except (TrivyError, TrivyReportError) as exc:
        raise dg.Failure(
            description=f"scan of {target.reference} failed, nothing was recorded: {exc}"
        ) from None
    record = scan_store.write_scan(
        store,
        digest=digest,
        reference=target.reference,
        raw_report=run.report,
        report=report,
        db_metadata=run.db,
        policy_sha256=policy.sha256,
        duration_seconds=run.seconds,
        image=config.image.strip() or (last.image if last else ""),
    )
    return dg.MaterializeResult(
        metadata={
            "scanned": dg.MetadataValue.bool(True),
            **_record_metadata(store, record),
            "source": target.describe(),
            "trivy_server": scanner.server_url or "none: Trivy on its own",
            "duration_seconds": dg.MetadataValue.float(record.duration_seconds),
            **_findings_metadata(report.vulnerabilities, report.secrets),
        }
    )


# --- the gates -------------------------------------------------------------------------------


def _table(frame: "pd.DataFrame", columns: dict[str, str]) -> dg.MetadataValue:
    """`columns`: the frame's column → the table's column."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in columns.values()])
    records = [
        dg.TableRecord({label: _cell(row[name]) for name, label in columns.items()})
        for _, row in frame.head(TABLE_ROWS).iterrows()
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def _judge(
    context: dg.AssetCheckExecutionContext,
    store: ArtefactStore,
    policy: ScanPolicy,
    *,
    frame: str,
    judge: Callable[[ScanPolicy, "pd.DataFrame", str, str, date], Verdict],
    what: str,
    failing_columns: dict[str, str],
) -> Iterator:
    """In a scan's run: the latest scan of its digest. Run on its own: of every digest, each on
    its partition (a digest never scanned fails: nothing vouches for it). Always against the
    current policy and today's date (UTC), so an ignore stops covering its finding on the day it
    expires, without a rescan."""
    today = datetime.now(UTC).date()
    partition = run_partition(context)
    digests = (
        [partition] if partition else context.instance.get_dynamic_partitions(IMAGE_DIGESTS.name)
    )
    results = {}
    for digest in digests:
        record = scan_store.latest_scan(store, digest)
        if record is None:
            results[digest] = dg.AssetCheckResult(
                passed=False,
                description=f"{digest} has no scan recorded: materialize scanning/image_scan "
                "for it",
            )
            continue
        findings = scan_store.read_frame(store, record, frame)
        verdict = judge(policy, findings, record.reference, digest, today)
        results[digest] = _judgement(record, verdict, what, failing_columns, policy, today)
    yield from per_partition(context, results)


def _judgement(
    record: scan_store.ScanRecord,
    verdict: Verdict,
    what: str,
    failing_columns: dict[str, str],
    policy: ScanPolicy,
    today: date,
) -> dg.AssetCheckResult:
    metadata = {
        "image": record.image or image_name(record.reference),
        "failing": dg.MetadataValue.int(len(verdict.failing)),
        "ignored": dg.MetadataValue.int(len(verdict.ignored)),
        "expired_ignores": dg.MetadataValue.int(len(verdict.expired_ignores)),
        "policy_sha256": policy.sha256[:12],
        "judged_on": today.isoformat(),
        "scanned_at": record.scanned_at,
    }
    if len(verdict.failing):
        metadata["failing_findings"] = _table(verdict.failing, failing_columns)
    if len(verdict.ignored):
        metadata["ignored_findings"] = _table(
            verdict.ignored, {"id": "id", "reason": "reason", "expires": "expires"}
        )
    if verdict.expired_ignores:
        metadata["expired_ignore_list"] = dg.MetadataValue.md(
            "\n".join(
                f"- {i.id}: expired on {i.expires} (reason was: {_cell(i.reason)})"
                for i in sorted(verdict.expired_ignores, key=lambda i: (i.id, i.expires))
            )
        )
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=f"{metadata['image']}: {verdict.describe(what)}",
        metadata=metadata,
    )


@partitioned_asset_check(
    asset=image_scan,
    partitions_def=IMAGE_DIGESTS,
    name=NO_FIXABLE_CRITICAL,
    blocking=True,
    description="No vulnerability at or above the scan policy's fail_on (fixable ones only "
    "when ignore_unfixed), other than those an unexpired ignore covers; an expired ignore "
    "fails. Judged on the latest scan with the current policy and today's date.",
)
def no_fixable_critical(
    context: dg.AssetCheckExecutionContext,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
):
    yield from _judge(
        context,
        artefact_store.store(),
        policies.scanning(),
        frame="vulnerabilities",
        judge=vulnerability_verdict,
        what="vulnerabilities failing the scan policy",
        failing_columns={
            "id": "id",
            "pkg_name": "package",
            "installed_version": "installed",
            "fixed_version": "fixed",
            "severity": "severity",
            "why": "why",
        },
    )


@partitioned_asset_check(
    asset=image_scan,
    partitions_def=IMAGE_DIGESTS,
    name=NO_EMBEDDED_SECRETS,
    blocking=True,
    description="No embedded secret (private key, token, password) at or above the scan "
    "policy's fail_on, other than those an unexpired ignore covers (by rule id).",
)
def no_embedded_secrets(
    context: dg.AssetCheckExecutionContext,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
):
    yield from _judge(
        context,
        artefact_store.store(),
        policies.scanning(),
        frame="secrets",
        judge=secret_verdict,
        what="embedded secrets",
        failing_columns={
            "id": "rule",
            "target": "file",
            "start_line": "line",
            "severity": "severity",
            "why": "why",
        },
    )
