"""What runs: the image digests of the cluster's pods, or of an inventory file; and the risk
report of those digests against their latest scans (lib/scanning/store.py).

Deployed images are a frame with DEPLOYED_COLUMNS, one row per (namespace, workload_kind,
workload, container, digest); `pods` counts the pods merged into the row, `pod` names one.

From the cluster (the pods' `status.containerStatuses`, `initContainerStatuses` and
`ephemeralContainerStatuses`), a container's digest comes from its `imageID`, which the runtime
writes in one of these forms:

    docker-pullable://host/repo@sha256:<hex>     dockershim / cri-dockerd
    host/repo@sha256:<hex>                       containerd, CRI-O
    docker.io/library/nginx@sha256:<hex>         the same, for a Docker Hub image

`imageID` may also hold no manifest digest (`docker://sha256:<config>`, a bare `sha256:<config>`
for an image loaded into the node, or nothing yet while the image is pulled): such a container
still gives a row, with a null digest and a `note` saying why, so the report shows it. The
workload comes from the pod's controller (ownerReferences): a ReplicaSet whose name ends in the
pod's `pod-template-hash` label is its Deployment's; a Job whose name ends in a CronJob's
schedule stamp (minutes since the epoch, as the CronJob controller names its Jobs) is that
CronJob's; StatefulSet, DaemonSet and any other controller are taken as they are; a pod without
a controller (or a static pod, owned by its Node) is its own workload, of kind Pod.

The inventory file (GSV_IMAGE_INVENTORY, default $GSV_DATA_DIR/deployed-images.yaml; example:
gsv_pipelines/policies/deployed-images.example.yaml) says the same where no cluster is reached:

    - namespace: platform          # mandatory
      workload: agent-registry     # mandatory
      kind: Deployment             # optional, default Deployment
      container: registry          # optional, default the workload's name
      image: registry.gsv.example/platform/agent-registry@sha256:<64 hex>
    - namespace: demo
      workload: agent-runtime
      image: oci:/srv/layouts/agent-runtime@sha256:<64 hex>     # an OCI layout folder

Each `image` is pinned by manifest digest: `host/repo@sha256:…` (the registry host written out),
or `oci:<path>@sha256:…` for an OCI layout folder (best an absolute path), which is then scanned
as `oci:<path>` (scanning/image_scan finds the digest in the layout's index).
"""

import contextlib
import fnmatch
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gsv_pipelines.lib.core.store import ArtefactStore, HashingWriter, StoredFile
from gsv_pipelines.lib.scanning.policy import ScanPolicy, secret_verdict, vulnerability_verdict
from gsv_pipelines.lib.scanning.store import ScanRecord

DEPLOYED_PREFIX = "scanning/deployed"
RISK_PREFIX = "scanning/risk"

DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
ACTIVE_PHASES = ("Running", "Pending")
# Cuts what the API sends; the phase is checked again on each pod whatever the server did.
ACTIVE_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
# A CronJob's Jobs are named <cronjob>-<scheduled time in minutes since the epoch>: a suffix
# between 2015 and 2100 is taken for one (an 8-digit date such as 20260101 falls below).
CRONJOB_SUFFIX = re.compile(r"(.+)-(\d{8})")
CRONJOB_MINUTES = (23_670_000, 68_370_000)
CONTAINER_KINDS = (
    ("container", "containers", "containerStatuses"),
    ("init", "initContainers", "initContainerStatuses"),
    ("ephemeral", "ephemeralContainers", "ephemeralContainerStatuses"),
)
INVENTORY_KEYS = {"namespace", "workload", "kind", "container", "image"}

DEPLOYED_COLUMNS: dict[str, str] = {
    "namespace": "str",
    "workload_kind": "str",
    "workload": "str",
    "container": "str",
    "container_type": "str",
    "image": "str",  # as the pod spec or the inventory writes it
    "reference": "str",  # what a scan takes: host/repo@sha256:…, or oci:<path> of a layout
    "digest": "str",  # null when the runtime recorded none (see `note`)
    "pod": "str",
    "pods": "Int64",
    "note": "str",
    "observed_at": "datetime64[us, UTC]",
}
DEPLOYED_KEY = ["namespace", "workload_kind", "workload", "container", "digest"]


class DeployedImagesError(RuntimeError):
    """The deployed images cannot be listed or read; the message says where and why."""


class InventoryError(ValueError):
    """The inventory file cannot be used; the message names the file and the entry."""


# --- pods --------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """A kubernetes client model (V1Pod, …) as the API's JSON (camelCase keys); JSON as it is."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, list | tuple):
        return [_plain(item) for item in obj]
    if isinstance(obj, Mapping):
        return {key: _plain(value) for key, value in obj.items()}
    attribute_map = getattr(obj, "attribute_map", None)
    if isinstance(attribute_map, Mapping):
        return {
            name: _plain(getattr(obj, attribute))
            for attribute, name in attribute_map.items()
            if getattr(obj, attribute, None) is not None
        }
    raise DeployedImagesError(f"not a pod: a {type(obj).__name__}")


def normalize_repository(repository: str) -> str:
    """`nginx` → `docker.io/library/nginx`, `org/app` → `docker.io/org/app`, as Docker reads
    familiar names; a repository whose first part is a host (a dot, a port or localhost) stays."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return repository
    return f"docker.io/{repository}" if rest else f"docker.io/library/{repository}"


def parse_image_id(image_id: str | None) -> tuple[str | None, str | None, str | None]:
    """(reference, digest, note) of a container status's imageID; the note says why a digest
    is missing (then reference and digest are None)."""
    value = (image_id or "").strip()
    if not value:
        return None, None, "no imageID yet: the image is not pulled"
    _, scheme, rest = value.partition("://")
    if scheme:
        value = rest
    repository, at, digest = value.rpartition("@")
    if at and repository and DIGEST.fullmatch(digest):
        return f"{normalize_repository(repository)}@{digest}", digest, None
    if DIGEST.fullmatch(value):
        return (
            None,
            None,
            (
                f"imageID {image_id} is the image's own ID, not a manifest digest: the node's "
                "runtime did not record the registry it came from"
            ),
        )
    return None, None, f"imageID {image_id!r} holds no manifest digest"


def _cronjob(job: str) -> str | None:
    match = CRONJOB_SUFFIX.fullmatch(job)
    if match and CRONJOB_MINUTES[0] <= int(match.group(2)) <= CRONJOB_MINUTES[1]:
        return match.group(1)
    return None


def pod_workload(metadata: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload a pod (its metadata, API JSON) belongs to."""
    owners = metadata.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None or owner.get("kind") == "Node":
        return "Pod", metadata.get("name") or ""
    kind, name = owner.get("kind") or "", owner.get("name") or ""
    if kind == "ReplicaSet":
        template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
        if template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name.removesuffix(f"-{template_hash}")
    if kind == "Job":
        cronjob = _cronjob(name)
        if cronjob:
            return "CronJob", cronjob
    return kind, name


def _waiting(status: Mapping[str, Any]) -> str:
    reason = ((status.get("state") or {}).get("waiting") or {}).get("reason")
    return f" (waiting: {reason})" if reason else ""


def pod_rows(pod: Any) -> list[dict[str, Any]]:
    """One row per container of a pod (V1Pod or the API's JSON), before de-duplication."""
    pod = _plain(pod)
    metadata, spec, status = (pod.get(key) or {} for key in ("metadata", "spec", "status"))
    kind, workload = pod_workload(metadata)
    base = {
        "namespace": metadata.get("namespace") or "default",
        "workload_kind": kind,
        "workload": workload,
        "pod": metadata.get("name"),
    }
    rows = []
    for container_type, spec_key, status_key in CONTAINER_KINDS:
        statuses = {s.get("name"): s for s in status.get(status_key) or []}
        containers = [(c.get("name"), c.get("image")) for c in spec.get(spec_key) or []]
        # A status without its spec entry should not happen, but would still be a running image.
        containers += [
            (n, s.get("image")) for n, s in statuses.items() if n not in dict(containers)
        ]
        for name, image in containers:
            container_status = statuses.get(name)
            if container_status is None:
                reference, digest, note = None, None, "no container status yet"
            else:
                reference, digest, note = parse_image_id(container_status.get("imageID"))
                if note and not container_status.get("imageID"):
                    note += _waiting(container_status)
            rows.append(
                {
                    **base,
                    "container": name,
                    "container_type": container_type,
                    "image": image or (container_status or {}).get("image"),
                    "reference": reference,
                    "digest": digest,
                    "note": note,
                }
            )
    return rows


def deployed_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows merged per (namespace, workload_kind, workload, container, digest), sorted, stamped
    with the time now; a null digest is a key of its own, so containers without one are kept,
    once per workload."""
    observed_at = datetime.now(UTC)
    merged: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.get(column) for column in DEPLOYED_KEY)
        known = merged.get(key)
        if known is None:
            merged[key] = {**row, "pods": 1 if row.get("pod") else None}
            continue
        if row.get("pod"):
            known["pods"] = (known["pods"] or 0) + 1
            known["pod"] = min(filter(None, (known.get("pod"), row["pod"])))
        known["note"] = known.get("note") or row.get("note")
    ordered = [merged[key] for key in sorted(merged, key=lambda k: tuple(v or "" for v in k))]
    for row in ordered:
        row["observed_at"] = observed_at
    return typed_frame(ordered, DEPLOYED_COLUMNS)


def list_active_pods(
    core_api: Any,
    *,
    page_size: int = 500,
    namespaces: Sequence[str] = (),
    exclude_namespaces: Sequence[str] = (),
) -> list[Any]:
    """The Running and Pending pods of every namespace, a page of `page_size` at a time, from
    kubernetes' CoreV1Api. `namespaces` / `exclude_namespaces` are fnmatch patterns. A continue
    token that expired mid-listing (410 Gone) restarts the listing once, as the API asks."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    restarted = False
    pods: list[Any] = []
    token: str | None = None
    while True:
        arguments: dict[str, Any] = {"limit": page_size, "field_selector": ACTIVE_SELECTOR}
        if token:
            arguments["_continue"] = token
        try:
            page = core_api.list_pod_for_all_namespaces(**arguments)
        except ApiException as exc:
            if exc.status == 410 and token and not restarted:
                restarted, pods, token = True, [], None
                continue
            raise DeployedImagesError(f"cannot list pods: {_api_error(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise DeployedImagesError(
                f"cannot list pods: the Kubernetes API is unreachable ({type(exc).__name__})"
            ) from None
        pods.extend(page.items or [])
        token = getattr(page.metadata, "_continue", None) if page.metadata else None
        if not token:
            break

    def wanted(pod: Any) -> bool:
        namespace = pod.metadata.namespace or ""
        phase = pod.status.phase if pod.status else None
        return (
            phase in ACTIVE_PHASES
            and (not namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in namespaces))
            and not any(fnmatch.fnmatchcase(namespace, p) for p in exclude_namespaces)
        )

    return [pod for pod in pods if wanted(pod)]


def _api_error(exc: Any) -> str:
    # Status and reason only: an error body can echo the request.
    if exc.status == 403:
        return "forbidden (403): the service account needs `list` on pods in every namespace"
    if exc.status == 401:
        return "unauthorized (401): the Kubernetes credentials were refused"
    return f"{exc.status} {exc.reason}"


def cluster_deployed_images(core_api: Any, **filters: Any) -> pd.DataFrame:
    """The deployed images of the cluster behind `core_api` (see `list_active_pods`)."""
    rows = [row for pod in list_active_pods(core_api, **filters) for row in pod_rows(pod)]
    return deployed_frame(rows)


# --- the inventory file ------------------------------------------------------------------


def _inventory_image(value: Any, where: str) -> tuple[str, str]:
    """(reference to scan, digest) of an inventory `image`."""
    shape = "host/repo@sha256:<64 hex> or oci:<path>@sha256:<64 hex>"
    if not isinstance(value, str) or not value.strip():
        raise InventoryError(f"{where}: `image` is mandatory ({shape})")
    value = value.strip()
    repository, at, digest = value.rpartition("@")
    if not at or not DIGEST.fullmatch(digest) or not repository:
        raise InventoryError(f"{where}: image {value!r} is not pinned by digest ({shape})")
    if repository.startswith("oci:"):
        if not repository.removeprefix("oci:"):
            raise InventoryError(f"{where}: image {value!r} names no OCI layout path")
        # A layout is scanned as `oci:<path>`: the scan finds the digest in the layout's index.
        return repository, digest
    if re.search(r"\s", repository) or normalize_repository(repository) != repository:
        raise InventoryError(
            f"{where}: image {value!r} must start with its registry host ({shape}), "
            f"e.g. {normalize_repository(repository)}@{digest}"
        )
    return value, digest


def _inventory_row(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise InventoryError(f"{where}: expected a mapping with namespace, workload and image")
    unknown = set(entry) - INVENTORY_KEYS
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("namespace", "workload"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise InventoryError(f"{where}: `{key}` is mandatory and must be a string")
    where = f"{where} ({entry['namespace']}/{entry['workload']})"
    for key in ("kind", "container"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise InventoryError(f"{where}: `{key}` must be a non-empty string when given")
    reference, digest = _inventory_image(entry.get("image"), where)
    return {
        "namespace": entry["namespace"].strip(),
        "workload_kind": entry.get("kind", "Deployment").strip(),
        "workload": entry["workload"].strip(),
        "container": entry.get("container", entry["workload"]).strip(),
        "container_type": "container",
        "image": entry["image"].strip(),
        "reference": reference,
        "digest": digest,
        "pod": None,
        "note": None,
    }


def read_inventory(path: Path) -> pd.DataFrame:
    """The deployed images listed in an inventory file (format: this module's docstring)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InventoryError(f"cannot read deployed-images file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"deployed-images file {path} is not valid YAML: {exc}") from None
    if document is None:
        document = []
    if not isinstance(document, list):
        raise InventoryError(
            f"deployed-images file {path}: expected a list of entries "
            "(namespace, workload, kind?, container?, image) at the top level"
        )
    rows = [
        _inventory_row(entry, f"deployed-images file {path}, entry {number}")
        for number, entry in enumerate(document, start=1)
    ]
    return deployed_frame(rows)


# --- frames in the store -----------------------------------------------------------------


def typed_frame(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """A frame of exactly `columns` (name: dtype), whatever the rows hold; empty keeps its shape."""
    rows = list(rows)
    return pd.DataFrame(
        {
            name: pd.Series([row.get(name) for row in rows], dtype=dtype)
            for name, dtype in columns.items()
        },
        columns=list(columns),
    )


@contextlib.contextmanager
def _aside(store: ArtefactStore, key: str) -> Iterator[HashingWriter]:
    """Write `key` whole or not at all: to `<key>.partial`, moved into place once complete."""
    partial = f"{key}.partial"
    with store.open_hashed(partial) as out:
        yield out
    store.fs.mv(posixpath.join(store.root, partial), posixpath.join(store.root, key))


def write_frame(store: ArtefactStore, key: str, frame: pd.DataFrame) -> StoredFile:
    """Write `frame` as Parquet to `key`, whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _aside(store, key) as out:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out)
    return StoredFile(key=key, size=out.stored.size, sha256=out.stored.sha256)


def write_text(store: ArtefactStore, key: str, text: str) -> StoredFile:
    """Write `text` (UTF-8) to `key`, whole or not at all."""
    with _aside(store, key) as out:
        out.write(text.encode())
    return StoredFile(key=key, size=out.stored.size, sha256=out.stored.sha256)


def read_frame(store: ArtefactStore, key: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        with store.open(key) as source:
            return pq.read_table(source).to_pandas()
    except (OSError, ValueError) as exc:
        raise DeployedImagesError(f"unreadable frame {store.location(key)}: {exc}") from None


def deployed_key(day: str) -> str:
    return posixpath.join(DEPLOYED_PREFIX, f"{day}.parquet")


def risk_key(day: str, name: str) -> str:
    """`report.md`, `findings.parquet` or `summary.json` of a day's risk report."""
    return posixpath.join(RISK_PREFIX, day, name)


def read_risk_findings(store: ArtefactStore, day: str) -> pd.DataFrame | None:
    """A day's stored findings, or None when that day has no complete report (its
    summary.json, written last, is missing)."""
    if not store.exists(risk_key(day, "summary.json")):
        return None
    return read_frame(store, risk_key(day, "findings.parquet"))


def newest_deployed_key(store: ArtefactStore) -> str | None:
    """The newest day's deployed-images file in the store, if any."""
    keys = store.glob(posixpath.join(DEPLOYED_PREFIX, "*.parquet"))
    return keys[-1] if keys else None


def digest_references(deployed: pd.DataFrame) -> dict[str, str]:
    """Each deployed digest (sorted) with the reference of its first row: what a scan pulls."""
    references: dict[str, str] = {}
    for digest, reference in zip(deployed["digest"], deployed["reference"], strict=True):
        if not pd.isna(digest) and digest not in references:
            references[digest] = reference
    return dict(sorted(references.items()))


# --- the risk report ---------------------------------------------------------------------

RISK_COLUMNS: dict[str, str] = {
    "namespace": "str",
    "workload_kind": "str",
    "workload": "str",
    "container": "str",
    "image": "str",
    "digest": "str",
    "scanned_at": "str",
    "critical": "int64",
    "high": "int64",
    "fixable": "int64",  # fixable vulnerabilities, all severities
    "secrets": "int64",
    "new": "int64",
    "verdict": "str",  # pass, fail, not scanned, no digest
    "why": "str",
}
FINDING_COLUMNS: dict[str, str] = {
    "namespace": "str",
    "workload_kind": "str",
    "workload": "str",
    "container": "str",
    "digest": "str",
    "kind": "str",  # vulnerability or secret
    "id": "str",  # vulnerability id, or the secret's rule id
    "package": "str",
    "target": "str",
    "severity": "str",
    "fixable": "bool",
    "installed_version": "str",
    "fixed_version": "str",
    "title": "str",
    "start_line": "Int64",
    "fails_policy": "bool",
    "policy_note": "str",  # why it fails, or the ignore that accepts it
    "new": "bool",
    "key": "str",  # what "new" compares: kind|id|package, or secret|rule|target
}
SCOPE = ["namespace", "workload_kind", "workload", "container", "key"]
VERDICT_ORDER = {"fail": 0, "not scanned": 1, "no digest": 2, "pass": 3}


@dataclass(frozen=True, eq=False)
class ScanFindings:
    """A digest's latest scan and its findings frames (lib/scanning/trivy_report.py columns)."""

    record: ScanRecord
    vulnerabilities: pd.DataFrame
    secrets: pd.DataFrame


@dataclass(frozen=True, eq=False)
class RiskReport:
    day: str
    previous_day: str
    previous_found: bool
    policy: ScanPolicy
    workloads: pd.DataFrame  # RISK_COLUMNS
    findings: pd.DataFrame  # FINDING_COLUMNS
    resolved: int  # findings of the previous report absent from this one

    @property
    def ignored(self) -> pd.Series:
        """Which findings an unexpired ignore of the policy accepts."""
        return self.findings["policy_note"].fillna("").str.startswith("ignored")

    @property
    def totals(self) -> dict[str, int]:
        w = self.workloads
        return {
            "workloads": len(w[["namespace", "workload_kind", "workload"]].drop_duplicates()),
            "containers": len(w),
            "digests": int(w["digest"].nunique()),
            "failing": int((w["verdict"] == "fail").sum()),
            "not_scanned": int((w["verdict"] == "not scanned").sum()),
            "without_digest": int((w["verdict"] == "no digest").sum()),
            "critical": int(w["critical"].sum()),
            "high": int(w["high"].sum()),
            "fixable": int(w["fixable"].sum()),
            "secrets": int(w["secrets"].sum()),
            "new_findings": int(w["new"].sum()),
            "resolved_findings": self.resolved,
            "ignored_findings": int(self.ignored.sum()),
        }


def _scan_findings(scan: ScanFindings, policy: ScanPolicy, reference: str, digest: str, day: date):
    """(findings rows, vulnerability verdict, secret verdict) of one deployed container."""
    rows = []
    frames = (
        ("vulnerability", scan.vulnerabilities, vulnerability_verdict),
        ("secret", scan.secrets, secret_verdict),
    )
    verdicts = []
    for kind, frame, judge in frames:
        frame = frame.reset_index(drop=True).assign(_row=range(len(frame)))
        verdict = judge(policy, frame, reference, digest, day)
        verdicts.append(verdict)
        failing = {
            row: f"fails: {why}"
            for row, why in zip(verdict.failing["_row"], verdict.failing["why"], strict=True)
        }
        ignored = {
            row: f"ignored until {expires}: {reason}"
            for row, reason, expires in zip(
                verdict.ignored["_row"],
                verdict.ignored["reason"],
                verdict.ignored["expires"],
                strict=True,
            )
        }
        for record in frame.to_dict("records"):
            vulnerability = kind == "vulnerability"
            finding_id = record["vulnerability_id" if vulnerability else "rule_id"]
            package = record["pkg_name"] if vulnerability else None
            where = package if vulnerability else record["target"]
            rows.append(
                {
                    "kind": kind,
                    "id": finding_id,
                    "package": package,
                    "target": record["target"],
                    "severity": record["severity"],
                    "fixable": bool(record["fixable"]) if vulnerability else False,
                    "installed_version": record["installed_version"] if vulnerability else None,
                    "fixed_version": record["fixed_version"] if vulnerability else None,
                    "title": record["title"],
                    "start_line": None if vulnerability else record["start_line"],
                    "fails_policy": record["_row"] in failing,
                    "policy_note": failing.get(record["_row"]) or ignored.get(record["_row"]),
                    "key": f"{kind}|{_text(finding_id)}|{_text(where)}",
                }
            )
    return rows, verdicts[0], verdicts[1]


def _text(value: Any) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def build_risk_report(
    day: str,
    deployed: pd.DataFrame,
    scans: Mapping[str, ScanFindings | None],
    policy: ScanPolicy,
    previous_day: str,
    previous_findings: pd.DataFrame | None,
) -> RiskReport:
    """Each deployed container against its digest's latest scan (`scans`, None: never scanned),
    judged by `policy` as of `day`; a finding is new when the previous day's report did not hold
    it for the same namespace, workload and container (no previous report: every one is new)."""
    today = date.fromisoformat(day)
    previous: set[tuple] = set()
    if previous_findings is not None:
        previous = {tuple(map(_text, k)) for k in previous_findings[SCOPE].itertuples(index=False)}
    workloads, findings = [], []
    for row in deployed.to_dict("records"):
        base = {
            key: _text(row[key]) or None
            for key in ("namespace", "workload_kind", "workload", "container", "image", "digest")
        }
        zero = {"critical": 0, "high": 0, "fixable": 0, "secrets": 0, "new": 0}
        digest = base["digest"]
        scan = scans.get(digest) if digest else None
        if not digest:
            workloads.append({**base, **zero, "verdict": "no digest", "why": _text(row["note"])})
            continue
        if scan is None:
            why = f"no scan of {digest} in the store"
            workloads.append({**base, **zero, "verdict": "not scanned", "why": why})
            continue
        reference = _text(row["reference"]) or scan.record.reference
        rows, vulnerabilities, secrets = _scan_findings(scan, policy, reference, digest, today)
        scope = {k: base[k] for k in ("namespace", "workload_kind", "workload", "container")}
        for finding in rows:
            key = tuple(_text(v) for v in (*scope.values(), finding["key"]))
            findings.append({**scope, "digest": digest, **finding, "new": key not in previous})
        mine = findings[len(findings) - len(rows) :]
        vulns = [f for f in mine if f["kind"] == "vulnerability"]
        why = "; ".join(
            verdict.describe(what)
            for verdict, what in (
                (vulnerabilities, f"{policy.fail_on}+ vulnerabilities"),
                (secrets, "embedded secrets"),
            )
            if not verdict.passed
        )
        workloads.append(
            {
                **base,
                "scanned_at": scan.record.scanned_at,
                "critical": sum(f["severity"] == "CRITICAL" for f in vulns),
                "high": sum(f["severity"] == "HIGH" for f in vulns),
                "fixable": sum(f["fixable"] for f in vulns),
                "secrets": len(mine) - len(vulns),
                "new": sum(f["new"] for f in mine),
                "verdict": "pass" if vulnerabilities.passed and secrets.passed else "fail",
                "why": why or "passes the scan policy",
            }
        )
    findings_frame = typed_frame(findings, FINDING_COLUMNS)
    current = {tuple(map(_text, k)) for k in findings_frame[SCOPE].itertuples(index=False)}
    workloads_frame = typed_frame(workloads, RISK_COLUMNS)
    order = workloads_frame["verdict"].map(VERDICT_ORDER)
    workloads_frame = (
        workloads_frame.assign(_order=order)
        .sort_values(["_order", "namespace", "workload", "container"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    return RiskReport(
        day=day,
        previous_day=previous_day,
        previous_found=previous_findings is not None,
        policy=policy,
        workloads=workloads_frame,
        findings=findings_frame,
        resolved=len(previous - current) if previous_findings is not None else 0,
    )


def _cell(value: Any) -> str:
    return _text(value).replace("|", "\\|").replace("\n", " ").strip() or "-"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def display_image(image: Any) -> str:
    """The image without its `@digest`, which has a column of its own; an OCI layout by its
    folder's name (its path would be one unbreakable cell as wide as the screen)."""
    text = _text(image).split("@", 1)[0]
    if text.startswith("oci:"):
        return "oci:" + text.removeprefix("oci:").rstrip("/").rsplit("/", 1)[-1]
    return text


def _short(digest: Any) -> str:
    text = _text(digest)
    return text[:19] if text else ""


def deployed_markdown(frame: pd.DataFrame, limit: int = 200) -> str:
    """The deployed images as a Markdown table (at most `limit` rows)."""
    lines = _table(
        ["namespace", "workload", "container", "image", "digest", "pods", "note"],
        (
            [
                r["namespace"],
                f"{r['workload_kind']}/{r['workload']}",
                r["container"]
                + ("" if r["container_type"] == "container" else f" ({r['container_type']})"),
                display_image(r["image"]),
                _short(r["digest"]),
                r["pods"],
                r["note"],
            ]
            for r in frame.head(limit).to_dict("records")
        ),
    )
    if len(frame) > limit:
        lines += ["", f"… and {len(frame) - limit} more rows in the stored file."]
    return "\n".join(lines) + "\n"


def risk_markdown(report: RiskReport, limit: int = 100) -> str:
    """The report as Markdown: totals, one row per deployed container, then the new, failing
    and ignored findings (at most `limit` rows each; findings.parquet holds them all)."""
    t = report.totals
    policy = report.policy
    lines = [
        f"# Image risk report, {report.day}",
        "",
        f"What ran on {report.day} ({t['workloads']} workloads, {t['containers']} containers, "
        f"{t['digests']} image digests) against each digest's latest scan, judged by the scan "
        f"policy {policy.source or '(shipped default)'} (sha256 {policy.sha256[:12]}, fail_on "
        f"{policy.fail_on}) as of {report.day}.",
        "",
        (
            f"New findings are those absent from the report of {report.previous_day} "
            f"({t['resolved_findings']} of its findings no longer appear)."
            if report.previous_found
            else f"No report of {report.previous_day}: this is the first report, so every "
            "finding counts as new."
        ),
        "",
        f"**{t['failing']} failing**, {t['not_scanned']} not scanned, {t['without_digest']} "
        f"without a digest; {t['critical']} critical, {t['high']} high, {t['fixable']} fixable "
        f"vulnerabilities, {t['secrets']} embedded secrets, {t['new_findings']} new findings "
        "(counted per container: an image in two workloads counts twice).",
        "",
        "## Workloads",
        "",
    ]
    w = report.workloads
    # The verdict and its counts first, the long cells last: readable on a 1600 px screen.
    lines += _table(
        [
            "namespace",
            "workload",
            "container",
            "verdict",
            "critical",
            "high",
            "fixable",
            "secrets",
            "new",
            "image",
            "digest",
            "scanned",
            "why",
        ],
        (
            [
                r["namespace"],
                f"{r['workload_kind']}/{r['workload']}",
                r["container"],
                r["verdict"],
                r["critical"],
                r["high"],
                r["fixable"],
                r["secrets"],
                r["new"],
                display_image(r["image"]),
                _short(r["digest"]),
                _text(r["scanned_at"])[:16],
                r["why"],
            ]
            for r in w.to_dict("records")
        ),
    )
    f = report.findings
    sections = (
        ("New findings", f[f["new"]]),
        ("Failing the policy", f[f["fails_policy"]]),
        ("Accepted by an ignore", f[report.ignored]),
    )
    for title, rows in sections:
        if rows.empty:
            continue
        lines += ["", f"## {title} ({len(rows)})", ""]
        lines += _table(
            [
                "namespace",
                "workload",
                "container",
                "finding",
                "package / target",
                "severity",
                "fixed in",
                "policy",
            ],
            (
                [
                    r["namespace"],
                    r["workload"],
                    r["container"],
                    r["id"],
                    r["package"] if r["kind"] == "vulnerability" else r["target"],
                    r["severity"],
                    r["fixed_version"],
                    r["policy_note"],
                ]
                for r in rows.head(limit).to_dict("records")
            ),
        )
        if len(rows) > limit:
            lines += ["", f"… and {len(rows) - limit} more in findings.parquet."]
    return "\n".join(lines) + "\n"
