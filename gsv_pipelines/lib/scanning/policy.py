"""The scan policy YAML (`gsv_pipelines/policies/scanning.yaml`, overridable by path) and its
verdict over a scan's findings frames (lib/scanning/trivy_report.py)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gsv_pipelines.lib.core.policy_file import read_policy
from gsv_pipelines.lib.scanning.trivy_report import SEVERITIES

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "scanning.yaml"
KEYS = {"fail_on", "ignore_unfixed", "secrets", "ignores"}
IGNORE_KEYS = {"id", "reason", "expires", "images"}


class ScanPolicyError(ValueError):
    """The scan policy cannot be used; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class Ignore:
    id: str
    reason: str
    expires: date
    images: tuple[str, ...] = ()

    def applies_to(self, reference: str, digest: str) -> bool:
        """Whether this ignore covers the image (`host/repo@digest` or `oci:<path>`)."""
        if not self.images:
            return True
        repository = reference.split("@", 1)[0]
        short = repository.split("/", 1)[1] if "/" in repository else repository
        return any(
            pattern == digest
            or fnmatch.fnmatchcase(repository, pattern)
            or fnmatch.fnmatchcase(short, pattern)
            for pattern in self.images
        )

    def expired(self, today: date) -> bool:
        return today >= self.expires


@dataclass(frozen=True)
class ScanPolicy:
    fail_on: str = "CRITICAL"
    ignore_unfixed: bool = True
    secrets: bool = True
    ignores: tuple[Ignore, ...] = ()
    source: str = ""

    @property
    def sha256(self) -> str:
        """The policy's content (not its file's formatting): part of every scan's record."""
        content = {
            "fail_on": self.fail_on,
            "ignore_unfixed": self.ignore_unfixed,
            "secrets": self.secrets,
            "ignores": [
                [i.id, i.reason, i.expires.isoformat(), list(i.images)] for i in self.ignores
            ],
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def severe(self, severity: pd.Series) -> pd.Series:
        """Rows at or above `fail_on`."""
        return severity.isin(SEVERITIES[SEVERITIES.index(self.fail_on) :])


@dataclass(frozen=True)
class Verdict:
    """What a check says about one image: the findings that fail it and why."""

    passed: bool
    failing: pd.DataFrame  # the rows that fail, with a `why` column
    ignored: pd.DataFrame  # the rows an unexpired ignore covers, with `reason` and `expires`
    expired_ignores: tuple[Ignore, ...] = field(default=())

    def describe(self, what: str) -> str:
        if self.passed:
            extra = (
                f" ({len(self.ignored)} ignored until their expiry)" if len(self.ignored) else ""
            )
            return f"no {what}{extra}"
        ids = ", ".join(sorted(set(self.failing["id"]))[:10])
        expired = (
            "; expired ignores: " + ", ".join(f"{i.id} ({i.expires})" for i in self.expired_ignores)
            if self.expired_ignores
            else ""
        )
        return f"{len(self.failing)} {what}: {ids}{expired}"


def _verdict(
    policy: ScanPolicy,
    findings: pd.DataFrame,
    candidates: pd.Series,
    reference: str,
    digest: str,
    today: date,
) -> Verdict:
    import pandas as pd

    findings = findings.assign(why="", reason="", expires="")
    ignores = {i.id: i for i in policy.ignores if i.applies_to(reference, digest)}
    expired: list[Ignore] = []
    covered = pd.Series(False, index=findings.index)
    for index, finding_id in findings["id"].items():
        ignore = ignores.get(finding_id)
        if ignore is None:
            continue
        if ignore.expired(today):
            if ignore not in expired:
                expired.append(ignore)
            findings.loc[index, "why"] = f"ignore expired on {ignore.expires}"
            candidates = candidates.copy()
            candidates.loc[index] = True
        else:
            covered.loc[index] = True
            findings.loc[index, "reason"] = ignore.reason
            findings.loc[index, "expires"] = ignore.expires.isoformat()
    failing = findings[candidates & ~covered]
    failing = failing.assign(
        why=failing["why"].where(failing["why"] != "", f"{policy.fail_on} or above")
    )
    return Verdict(
        passed=failing.empty,
        failing=failing.drop(columns=["reason", "expires"]).reset_index(drop=True),
        ignored=findings[covered].drop(columns=["why"]).reset_index(drop=True),
        expired_ignores=tuple(expired),
    )


def vulnerability_verdict(
    policy: ScanPolicy, vulnerabilities: pd.DataFrame, reference: str, digest: str, today: date
) -> Verdict:
    """`no_fixable_critical`: vulnerabilities at or above `fail_on` (fixable ones only when
    `ignore_unfixed`), less unexpired ignores; an expired ignore makes its finding fail."""
    findings = vulnerabilities.rename(columns={"vulnerability_id": "id"})
    candidates = policy.severe(findings["severity"])
    if policy.ignore_unfixed:
        candidates = candidates & findings["fixable"].astype(bool)
    return _verdict(policy, findings, candidates, reference, digest, today)


def secret_verdict(
    policy: ScanPolicy, secrets: pd.DataFrame, reference: str, digest: str, today: date
) -> Verdict:
    """`no_embedded_secrets`: secrets at or above `fail_on`, less unexpired ignores (by rule)."""
    findings = secrets.rename(columns={"rule_id": "id"})
    candidates = policy.severe(findings["severity"]) & policy.secrets
    return _verdict(policy, findings, candidates, reference, digest, today)


def load_scan_policy(path: str | Path | None = None) -> ScanPolicy:
    """Read and validate the policy at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else DEFAULT_POLICY
    data = read_policy(path, "scan policy", ScanPolicyError)
    where = f"scan policy {path}"
    if not isinstance(data, dict) or set(data) - KEYS:
        raise ScanPolicyError(f"{where} takes only {', '.join(sorted(KEYS))}")
    fail_on = str(data.get("fail_on", "CRITICAL")).upper()
    if fail_on not in SEVERITIES:
        raise ScanPolicyError(f"{where}: fail_on must be one of {', '.join(SEVERITIES)}")
    flags = {}
    for key in ("ignore_unfixed", "secrets"):
        flags[key] = data.get(key, True)
        if not isinstance(flags[key], bool):
            raise ScanPolicyError(f"{where}: {key} must be true or false")
    entries = data.get("ignores") or []
    if not isinstance(entries, list):
        raise ScanPolicyError(f"{where}: ignores must be a list")
    ignores = tuple(_ignore(entry, f"{where}, ignores[{n}]") for n, entry in enumerate(entries))
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    for n, ignore in enumerate(ignores):
        if (ignore.id, ignore.images) in seen:
            raise ScanPolicyError(
                f"{where}: ignores[{n}] repeats ignores[{seen[ignore.id, ignore.images]}]"
            )
        seen[ignore.id, ignore.images] = n
    return ScanPolicy(fail_on=fail_on, ignores=ignores, source=str(path), **flags)


def _ignore(entry: Any, where: str) -> Ignore:
    if not isinstance(entry, dict):
        raise ScanPolicyError(f"{where} must be a mapping")
    unknown = set(entry) - IGNORE_KEYS
    if unknown:
        raise ScanPolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("id", "reason", "expires"):
        if not entry.get(key):
            raise ScanPolicyError(f"{where}: `{key}` is mandatory")
    expires = entry["expires"]
    if isinstance(expires, str):
        try:
            expires = date.fromisoformat(expires)
        except ValueError:
            raise ScanPolicyError(f"{where}: expires must be YYYY-MM-DD, not {expires!r}") from None
    if not isinstance(expires, date):
        raise ScanPolicyError(f"{where}: expires must be YYYY-MM-DD")
    images = entry.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise ScanPolicyError(f"{where}: images must be a list of patterns or digests")
    return Ignore(
        id=str(entry["id"]),
        reason=str(entry["reason"]).strip(),
        expires=expires,
        images=tuple(images),
    )
