"""Image scans in the artefact store, keyed by manifest digest.

    scanning/images/<algo>-<hex>/<UTC stamp>/report.json.gz     Trivy's report, secrets redacted
                                           /vulnerabilities.parquet, secrets.parquet,
                                            misconfigurations.parquet   (trivy_report frames)
                                           /scan.json                   the ScanRecord
    scanning/images/<algo>-<hex>/latest.json                    the newest ScanRecord, written last

A scan counts only once `latest.json` names it: a scan that failed half-way leaves at most an
unreferenced folder, never a record.
"""

from __future__ import annotations

import copy
import gzip
import json
import posixpath
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gsv_pipelines.lib.core.store import ArtefactStore, StoredFile

if TYPE_CHECKING:
    import pandas as pd

    from gsv_pipelines.lib.scanning.trivy_report import Report

PREFIX = "scanning/images"
FRAMES = ("vulnerabilities", "secrets", "misconfigurations")
REDACTED = "[redacted by gsv]"


class ScanStoreError(RuntimeError):
    """A stored scan is missing a part or cannot be read."""


@dataclass(frozen=True)
class ScanRecord:
    digest: str
    reference: str
    scanned_at: str  # ISO 8601, UTC
    db_version: int
    db_updated_at: str
    policy_sha256: str
    duration_seconds: float
    severity_counts: dict[str, int]
    fixable_counts: dict[str, int]
    secret_count: int
    misconfiguration_count: int
    prefix: str
    artefacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The image as people name it (repository:tag as pushed or deployed); "" in older records.
    image: str = ""

    def is_current(self, db_updated_at: str, policy_sha256: str) -> bool:
        """Scanned with this DB and this policy: a rescan would find nothing new."""
        return self.db_updated_at == db_updated_at and self.policy_sha256 == policy_sha256


def image_name(reference: str) -> str:
    """A short name for a scan reference: `host/repository` of `host/repository@digest`, the
    folder's name of `oci:<path>[@digest]`."""
    if reference.startswith("oci:"):
        path = reference.removeprefix("oci:").rpartition("@")[0] or reference.removeprefix("oci:")
        return "oci:" + posixpath.basename(path.rstrip("/"))
    return reference.partition("@")[0]


def digest_folder(digest: str) -> str:
    algo, _, hexdigest = digest.partition(":")
    if not algo or not hexdigest or "/" in digest:
        raise ValueError(f"not an image digest: {digest!r} (expected sha256:<hex>)")
    return posixpath.join(PREFIX, f"{algo}-{hexdigest}")


def redact_secrets(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of Trivy's report without the matched text of secret findings (Trivy masks the
    secret itself, but the surrounding line may still hold parts of it)."""
    report = copy.deepcopy(report)
    for result in report.get("Results") or []:
        for secret in result.get("Secrets") or []:
            if "Match" in secret:
                secret["Match"] = REDACTED
            code = secret.get("Code")
            if isinstance(code, dict):
                for line in code.get("Lines") or []:
                    for key in ("Content", "Highlighted"):
                        if key in line:
                            line[key] = REDACTED
    return report


def write_scan(
    store: ArtefactStore,
    *,
    digest: str,
    reference: str,
    raw_report: dict[str, Any],
    report: Report,
    db_metadata: dict[str, Any],
    policy_sha256: str,
    duration_seconds: float,
    image: str = "",
    scanned_at: datetime | None = None,
) -> ScanRecord:
    """Store one finished scan and make it the digest's latest (its record written last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gsv_pipelines.lib.scanning.trivy_report import fixable_counts, severity_counts

    scanned_at = scanned_at or datetime.now(UTC)
    folder = digest_folder(digest)
    prefix = posixpath.join(folder, scanned_at.strftime("%Y%m%dT%H%M%S.%fZ"))
    artefacts: dict[str, StoredFile] = {}

    data = gzip.compress(json.dumps(redact_secrets(raw_report)).encode(), mtime=0)
    artefacts["report"] = store.write_stream(posixpath.join(prefix, "report.json.gz"), [data])
    for name in FRAMES:
        frame: pd.DataFrame = getattr(report, name)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with store.open_hashed(posixpath.join(prefix, f"{name}.parquet")) as out:
            pq.write_table(table, out)
        artefacts[name] = out.stored

    record = ScanRecord(
        digest=digest,
        reference=reference,
        scanned_at=scanned_at.isoformat(),
        db_version=int(db_metadata.get("Version", 0)),
        db_updated_at=str(db_metadata.get("UpdatedAt")),
        policy_sha256=policy_sha256,
        duration_seconds=round(duration_seconds, 3),
        severity_counts=severity_counts(report.vulnerabilities),
        fixable_counts=fixable_counts(report.vulnerabilities),
        secret_count=len(report.secrets),
        misconfiguration_count=len(report.misconfigurations),
        prefix=prefix,
        artefacts={name: asdict(stored) for name, stored in artefacts.items()},
        image=image or image_name(reference),
    )
    store.write_json_atomic(posixpath.join(prefix, "scan.json"), asdict(record))
    store.write_json_atomic(posixpath.join(folder, "latest.json"), asdict(record))
    return record


def latest_scan(store: ArtefactStore, digest: str) -> ScanRecord | None:
    """The digest's newest complete scan, or None if it was never scanned."""
    key = posixpath.join(digest_folder(digest), "latest.json")
    if not store.exists(key):
        return None
    try:
        return ScanRecord(**store.read_json(key))
    except (OSError, ValueError, TypeError) as exc:
        raise ScanStoreError(f"unreadable scan record {store.location(key)}: {exc}") from None


def read_frame(store: ArtefactStore, record: ScanRecord, name: str) -> pd.DataFrame:
    """One of the scan's findings frames (`vulnerabilities`, `secrets`, `misconfigurations`)."""
    import pyarrow.parquet as pq

    if name not in FRAMES:
        raise ValueError(f"no frame {name!r}; one of {', '.join(FRAMES)}")
    key = posixpath.join(record.prefix, f"{name}.parquet")
    try:
        with store.open(key) as source:
            return pq.read_table(source).to_pandas()
    except (OSError, ValueError) as exc:
        raise ScanStoreError(f"unreadable findings {store.location(key)}: {exc}") from None


def read_report(store: ArtefactStore, record: ScanRecord) -> Report:
    """The stored (redacted) Trivy report, parsed again."""
    from gsv_pipelines.lib.scanning.trivy_report import parse_report

    key = posixpath.join(record.prefix, "report.json.gz")
    with store.open(key) as source:
        return parse_report(gzip.decompress(source.read()))


def scanned_digests(store: ArtefactStore) -> list[str]:
    """Every digest with a complete scan."""
    digests = []
    for name in store.list_dirs(PREFIX):
        algo, _, hexdigest = name.partition("-")
        if store.exists(posixpath.join(PREFIX, name, "latest.json")):
            digests.append(f"{algo}:{hexdigest}")
    return digests
