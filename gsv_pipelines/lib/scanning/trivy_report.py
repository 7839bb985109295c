"""Trivy's JSON report (`trivy ... --format json`, SchemaVersion 2) as pandas frames.

One row per finding, in three frames whose columns and dtypes are fixed, so an empty report
gives empty frames of the same shape as a full one. Findings are taken from every result that
holds them, whatever its class; license results are ignored.

Secrets keep only where they are and which rule found them: Trivy's `Match` and
`Code.Lines[].Content` hold the matched text, and nothing of either is read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
SCHEMA_VERSION = 2

_TEXT = "str"
_WHEN = "datetime64[us, UTC]"

VULNERABILITY_COLUMNS: dict[str, str] = {
    "target": _TEXT,
    "class": _TEXT,
    "type": _TEXT,
    "vulnerability_id": _TEXT,
    "pkg_name": _TEXT,
    "pkg_id": _TEXT,
    "installed_version": _TEXT,
    "fixed_version": _TEXT,
    "status": _TEXT,
    "severity": _TEXT,
    "severity_source": _TEXT,
    "title": _TEXT,
    "primary_url": _TEXT,
    "published_date": _WHEN,
    "last_modified_date": _WHEN,
    "cvss_score": "float64",
    "cvss_source": _TEXT,
    "fixable": "bool",
    "layer_digest": _TEXT,
}
SECRET_COLUMNS: dict[str, str] = {
    "target": _TEXT,
    "rule_id": _TEXT,
    "category": _TEXT,
    "severity": _TEXT,
    "title": _TEXT,
    "start_line": "Int64",
    "end_line": "Int64",
}
MISCONFIGURATION_COLUMNS: dict[str, str] = {
    "target": _TEXT,
    "type": _TEXT,
    "id": _TEXT,
    "avd_id": _TEXT,
    "title": _TEXT,
    "severity": _TEXT,
    "status": _TEXT,
    "message": _TEXT,
    "resolution": _TEXT,
    "primary_url": _TEXT,
    "start_line": "Int64",
    "end_line": "Int64",
}


class TrivyReportError(ValueError):
    """The input is not a readable Trivy JSON report of SchemaVersion 2."""


@dataclass(frozen=True, eq=False)
class Report:
    """A parsed report. In `misconfigurations`, `type` is the result's type (`dockerfile`,
    `kubernetes`, `terraform`...), as it is in `vulnerabilities`."""

    schema_version: int
    artifact_name: str | None
    artifact_type: str | None
    created_at: pd.Timestamp | None
    os_family: str | None
    os_name: str | None
    image_id: str | None
    repo_digests: tuple[str, ...]
    vulnerabilities: pd.DataFrame = field(repr=False)
    secrets: pd.DataFrame = field(repr=False)
    misconfigurations: pd.DataFrame = field(repr=False)


def parse_report(data: bytes | str | dict) -> Report:
    """Parse a report given as its JSON text (bytes or str) or as the already-decoded object."""
    document = data if isinstance(data, dict) else _decode(data)
    if not isinstance(document, dict):
        raise TrivyReportError(
            f"a Trivy report is a JSON object at the top level, not {_json_kind(document)}"
        )
    if "SchemaVersion" not in document:
        raise TrivyReportError("top-level field SchemaVersion is missing: not a Trivy JSON report")
    version = document["SchemaVersion"]
    if type(version) is not int or version != SCHEMA_VERSION:
        shown = version if type(version) in (int, float) else _json_kind(version)
        raise TrivyReportError(
            f"top-level field SchemaVersion is {shown}; only {SCHEMA_VERSION} is supported"
        )

    metadata = _object(document, "Metadata", "") or {}
    os_info = _object(metadata, "OS", "Metadata") or {}
    vulnerabilities, secrets, misconfigurations = [], [], []
    for index, result in enumerate(_array(document, "Results", "")):
        where = f"Results[{index}]"
        if not isinstance(result, dict):
            raise TrivyReportError(f"{where} should be an object, got {_json_kind(result)}")
        context = {
            "target": _string(result, "Target", where),
            "class": _string(result, "Class", where),
            "type": _string(result, "Type", where),
        }
        for item, item_where in _items(result, "Vulnerabilities", where):
            vulnerabilities.append(_vulnerability_row(context, item, item_where))
        for item, item_where in _items(result, "Secrets", where):
            secrets.append(_secret_row(context, item, item_where))
        for item, item_where in _items(result, "Misconfigurations", where):
            misconfigurations.append(_misconfiguration_row(context, item, item_where))

    return Report(
        schema_version=version,
        artifact_name=_string(document, "ArtifactName", ""),
        artifact_type=_string(document, "ArtifactType", ""),
        created_at=_created_at(document),
        os_family=_string(os_info, "Family", "Metadata.OS"),
        os_name=_string(os_info, "Name", "Metadata.OS"),
        image_id=_string(metadata, "ImageID", "Metadata"),
        repo_digests=tuple(_strings(metadata, "RepoDigests", "Metadata")),
        vulnerabilities=_frame(vulnerabilities, VULNERABILITY_COLUMNS),
        secrets=_frame(secrets, SECRET_COLUMNS),
        misconfigurations=_frame(misconfigurations, MISCONFIGURATION_COLUMNS),
    )


def severity_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per severity, for any of the three frames; every severity is a key."""
    counts = frame["severity"].value_counts()
    return {severity: int(counts.get(severity, 0)) for severity in SEVERITIES}


def fixable_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Fixable vulnerabilities per severity; every severity is a key."""
    return severity_counts(frame[frame["fixable"]])


# --- decoding ------------------------------------------------------------------------------


def _decode(data: bytes | str) -> Any:
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TrivyReportError(
                f"the report is not UTF-8 text (bad byte at offset {exc.start})"
            ) from None
    if not isinstance(data, str):
        raise TrivyReportError(
            f"a report is given as bytes, str or dict, not {type(data).__name__}"
        )
    if not data.strip():
        raise TrivyReportError("the report is empty")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        # The message gives the position only: the text around it may be a secret's line.
        hint = ", so the report looks truncated" if _cut_short(data, exc) else ""
        raise TrivyReportError(
            f"the report is not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}){hint}"
        ) from None


# What the decoder can have been reading when the text stopped: a number, a literal or an escape.
_UNFINISHED_TOKEN = re.compile(
    r"[-+.eE0-9]*|t(r(u)?)?|f(a(l(s)?)?)?|n(u(l)?)?|\\?u[0-9a-fA-F]{0,4}"
)


def _cut_short(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether decoding failed only because the text ended: at its end, inside a string, or
    inside a token that the end cut in two."""
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return True
    return _UNFINISHED_TOKEN.fullmatch(text[exc.pos :].strip()) is not None


def _created_at(document: dict) -> pd.Timestamp | None:
    import pandas as pd

    text = _string(document, "CreatedAt", "")
    if text is None:
        return None
    try:
        return pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, OverflowError):
        raise TrivyReportError("top-level field CreatedAt is not an RFC 3339 time") from None


# --- rows ----------------------------------------------------------------------------------


def _vulnerability_row(context: dict, item: dict, where: str) -> dict:
    status = _string(item, "Status", where)
    status = status.strip().lower() if status else None
    fixed_version = _string(item, "FixedVersion", where)
    score, source = _highest_cvss(item, where)
    layer = _object(item, "Layer", where) or {}
    return {
        **context,
        "vulnerability_id": _string(item, "VulnerabilityID", where),
        "pkg_name": _string(item, "PkgName", where),
        "pkg_id": _string(item, "PkgID", where),
        "installed_version": _string(item, "InstalledVersion", where),
        "fixed_version": fixed_version,
        "status": status,
        "severity": _severity(item, where),
        "severity_source": _string(item, "SeveritySource", where),
        "title": _string(item, "Title", where),
        "primary_url": _string(item, "PrimaryURL", where),
        "published_date": _string(item, "PublishedDate", where),
        "last_modified_date": _string(item, "LastModifiedDate", where),
        "cvss_score": score,
        "cvss_source": source,
        "fixable": status == "fixed" or bool(fixed_version and fixed_version.strip()),
        "layer_digest": _string(layer, "Digest", f"{where}.Layer"),
    }


def _secret_row(context: dict, item: dict, where: str) -> dict:
    return {
        "target": context["target"],
        "rule_id": _string(item, "RuleID", where),
        "category": _string(item, "Category", where),
        "severity": _severity(item, where),
        "title": _string(item, "Title", where),
        "start_line": _integer(item, "StartLine", where),
        "end_line": _integer(item, "EndLine", where),
    }


def _misconfiguration_row(context: dict, item: dict, where: str) -> dict:
    cause = _object(item, "CauseMetadata", where) or {}
    status = _string(item, "Status", where)
    return {
        "target": context["target"],
        "type": context["type"],
        "id": _string(item, "ID", where),
        "avd_id": _string(item, "AVDID", where),
        "title": _string(item, "Title", where),
        "severity": _severity(item, where),
        "status": status.strip().upper() if status else None,
        "message": _string(item, "Message", where),
        "resolution": _string(item, "Resolution", where),
        "primary_url": _string(item, "PrimaryURL", where),
        "start_line": _integer(cause, "StartLine", f"{where}.CauseMetadata"),
        "end_line": _integer(cause, "EndLine", f"{where}.CauseMetadata"),
    }


def _severity(item: dict, where: str) -> str:
    """Upper-cased; absent or outside Trivy's five levels counts as UNKNOWN."""
    value = (_string(item, "Severity", where) or "").strip().upper()
    return value if value in SEVERITIES else "UNKNOWN"


def _highest_cvss(item: dict, where: str) -> tuple[float | None, str | None]:
    """The highest CVSS v3 base score over the sources (nvd, redhat, ghsa...), else the highest
    v2 one. Ties go to the source whose name sorts first, so the result is stable."""
    by_source = _object(item, "CVSS", where) or {}
    for key in ("V3Score", "V2Score"):
        scores = []
        for source, vector in by_source.items():
            if not isinstance(vector, dict):
                raise TrivyReportError(
                    f"{where}.CVSS.{source} should be an object, got {_json_kind(vector)}"
                )
            score = _number(vector, key, f"{where}.CVSS.{source}")
            if score is not None:
                scores.append((-score, source))
        if scores:
            negative, source = min(scores)
            return -negative, source
    return None, None


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    data = {}
    for name, dtype in columns.items():
        values = [row[name] for row in rows]
        if dtype == _WHEN:
            # Trivy writes RFC 3339; a date it could not fill in is better missing than fatal.
            when = pd.to_datetime(
                pd.Series(values, dtype=_TEXT), utc=True, format="ISO8601", errors="coerce"
            )
            data[name] = when.astype(_WHEN)
        else:
            data[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data, columns=list(columns))


# --- typed access with the path in the message --------------------------------------------


def _items(result: dict, key: str, where: str):
    for index, item in enumerate(_array(result, key, where)):
        item_where = f"{where}.{key}[{index}]"
        if not isinstance(item, dict):
            raise TrivyReportError(f"{item_where} should be an object, got {_json_kind(item)}")
        yield item, item_where


def _checked(obj: dict, key: str, where: str, kinds: tuple[type, ...], wanted: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        path = f"{where}.{key}" if where else f"top-level field {key}"
        raise TrivyReportError(f"{path} should be {wanted}, got {_json_kind(value)}")
    return value


def _string(obj: dict, key: str, where: str) -> str | None:
    return _checked(obj, key, where, (str,), "a string")


def _integer(obj: dict, key: str, where: str) -> int | None:
    return _checked(obj, key, where, (int,), "an integer")


def _number(obj: dict, key: str, where: str) -> float | None:
    value = _checked(obj, key, where, (int, float), "a number")
    return None if value is None or math.isnan(value) else float(value)


def _object(obj: dict, key: str, where: str) -> dict | None:
    return _checked(obj, key, where, (dict,), "an object")


def _array(obj: dict, key: str, where: str) -> list:
    """A list, with absent and null both meaning empty (Trivy writes either)."""
    return _checked(obj, key, where, (list,), "a list") or []


def _strings(obj: dict, key: str, where: str) -> list[str]:
    values = _array(obj, key, where)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise TrivyReportError(
                f"{where}.{key}[{index}] should be a string, got {_json_kind(value)}"
            )
    return values


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
