"""The markdown evidence of a DR drill or a restore: what was restored from which backup, what
was checked and found, RTO and RPO against their targets, and what was cleaned up.

It names the record it was rendered from (a JSON file in the artefact store) with that file's
SHA-256, so the report and the record can be checked against each other.
"""

import hashlib
import json
import posixpath
from datetime import UTC, datetime

from gsv_pipelines.lib.core.manifest import new_backup_id
from gsv_pipelines.lib.core.store import ArtefactStore, StoredFile
from gsv_pipelines.lib.drills.restore import Evidence
from gsv_pipelines.lib.drills.run import REPORT_FILE, DrillRecord

PHASES = (
    "verify_backup",
    "safety_backup",
    "remove_destination",
    "restore",
    "verify",
    "roll_back",
    "cleanup",
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_rows(targets: list[Evidence]) -> list[str]:
    lines = [
        "| target | backup used | consistency point | RPO | RPO target | RTO | RTO target "
        "| verified | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        backup = t.backup or {}
        ok = t.verified and not t.error and t.rto_ok and t.rpo_ok
        lines.append(
            "| "
            + " | ".join(
                _cell(c)
                for c in (
                    t.label,
                    backup.get("backup_id", "none"),
                    backup.get("consistency_point", ""),
                    f"{_duration(t.rpo_seconds)} ({_verdict(t.rpo_ok)})",
                    _duration(t.rpo_target_seconds),
                    f"{_duration(t.rto_seconds)} ({_verdict(t.rto_ok)})",
                    _duration(t.rto_target_seconds),
                    "yes" if t.verified else "no",
                    _verdict(ok),
                )
            )
            + " |"
        )
    return lines


def target_section(t: Evidence) -> list[str]:
    backup = t.backup or {}
    lines = [f"### {t.label}", ""]
    if backup:
        what = backup.get("points")
        what = f", {what} points" if what is not None else ""
        rows = backup.get("rows")
        what += f", {rows} rows" if rows is not None else ""
        lines += [
            f"- backup: `{backup['backup_id']}` ({backup['method']}{what}), consistent at "
            f"{backup['consistency_point']}, at `{backup['location']}`",
            "",
            "| file | bytes | SHA-256 |",
            "|---|---|---|",
            *[f"| {_cell(f['name'])} | {f['size']} | `{f['sha256']}` |" for f in backup["files"]],
            "",
        ]
    else:
        lines.append("- backup: none found")
    lines.append(f"- restored into: `{t.destination or 'nothing'}` on {t.location} ({t.mode})")
    before = t.facts.get("destination_before")
    if before is not None:
        lines.append(f"- destination before: {before}")
    if t.safety_backup:
        lines.append(
            f"- safety backup of the destination: `{t.safety_backup['backup_id']}` at "
            f"`{t.safety_backup['location']}`"
        )
    after = t.facts.get("destination_after")
    if after is not None:
        lines.append(f"- destination after: {after}")
    if t.checks:
        lines += ["", "| check | result | detail |", "|---|---|---|"]
        for check in t.checks:
            result = "n/a" if check.passed is None else _verdict(check.passed)
            lines.append(f"| {check.name} | {result} | {_cell(check.detail)} |")
        lines.append("")
    if t.phases:
        order = [p for p in PHASES if p in t.phases] + sorted(set(t.phases) - set(PHASES))
        phases = ", ".join(f"{name} {t.phases[name]:.2f} s" for name in order)
        lines.append(f"- phases: {phases}")
    lines.append(
        f"- RTO {_duration(t.rto_seconds)} (target {_duration(t.rto_target_seconds)}): "
        f"{_verdict(t.rto_ok)}; RPO {_duration(t.rpo_seconds)} "
        f"(target {_duration(t.rpo_target_seconds)}): {_verdict(t.rpo_ok)}"
    )
    if t.cleaned_up:
        lines.append(f"- cleaned up: {'; '.join(t.cleaned_up)}")
    if t.error:
        lines.append(f"- **error**: {t.error}")
    return [*lines, ""]


def render_drill(record: DrillRecord, record_location: str, record_sha256: str) -> str:
    failing = [t.label for t in record.targets if not (t.verified and not t.error)]
    lines = [
        f"# DR drill {record.drill_id}",
        "",
        f"**Result: {_verdict(record.passed and record.rto_ok and record.rpo_ok)}** — "
        f"{len(record.targets)} target(s) restored into scratch copies and verified: "
        f"{len(record.targets) - len(failing)} passed"
        + (f", failed: {', '.join(failing)}" if failing else "")
        + f"; RTO within target: {_verdict(record.rto_ok)}; "
        f"RPO within target: {_verdict(record.rpo_ok)}.",
        "",
        "| | |",
        "|---|---|",
        f"| started | {record.started_at} |",
        f"| finished | {record.finished_at} |",
        f"| Dagster run | `{record.run_id}` |",
        f"| drill policy | `{record.policy}` |",
        f"| backup store | `{record.store}` |",
        "",
        "RTO: from the start of the restore (re-verifying the backup's checksums) to the copy "
        "verified. RPO: the drill's start minus the consistency point of the backup restored.",
        "",
        "## Targets",
        "",
        *summary_rows(record.targets),
        "",
        *[line for t in record.targets for line in target_section(t)],
        "## Cleanup",
        "",
    ]
    dropped = [c for t in record.targets for c in t.cleaned_up]
    lines += [f"- {c}" for c in dropped] or ["- no scratch copy was left to drop"]
    lines += [f"- {c}" for c in record.leftovers_removed] or [
        "- no leftovers of earlier runs were found"
    ]
    lines += [f"- **problem**: {p}" for p in record.problems]
    lines += [
        "",
        "## Provenance",
        "",
        f"Rendered {datetime.now(UTC).isoformat(timespec='seconds')} from the drill record "
        f"`{record_location}` (SHA-256 `{record_sha256}`).",
        "",
    ]
    return "\n".join(lines)


def render_restore(
    evidence: Evidence,
    run_id: str,
    leftovers: list[str],
    record_location: str,
    record_sha256: str,
) -> str:
    title = {"dry_run": "Dry run of a restore", "restore": "Restore"}.get(evidence.mode, "Restore")
    ok = evidence.verified and not evidence.error
    lines = [
        f"# {title}: {evidence.label} into `{evidence.destination or '?'}`",
        "",
        f"**Result: {_verdict(ok)}**"
        + (" — nothing was changed outside a scratch copy." if evidence.mode == "dry_run" else ""),
        "",
        f"Started {evidence.started_at}, Dagster run `{run_id}`.",
        "",
        *summary_rows([evidence]),
        "",
        *target_section(evidence),
        *[f"- {line}" for line in leftovers],
        "",
        f"Rendered from the restore record `{record_location}` (SHA-256 `{record_sha256}`).",
        "",
    ]
    return "\n".join(lines)


RESTORES = "restores"


def store_restore_evidence(
    store: ArtefactStore, evidence: Evidence, run_id: str, leftovers: list[str], config: dict
) -> tuple[str, str, str]:
    """Write a restore's record (JSON) and report (markdown) under `restores/<id>/`; return the
    record's key, the report's key and the report."""
    started = datetime.fromisoformat(evidence.started_at)
    folder = posixpath.join(RESTORES, new_backup_id(started, run_id))
    record_key = posixpath.join(folder, "restore.json")
    record = {
        "run_id": run_id,
        "config": config,
        "evidence": evidence.to_dict(),
        "leftovers_removed": leftovers,
    }
    store.write_json_atomic(record_key, record)
    raw = b"".join(store.iter_chunks(record_key))
    report = render_restore(
        evidence, run_id, leftovers, store.location(record_key), hashlib.sha256(raw).hexdigest()
    )
    stored = store.write_stream(posixpath.join(folder, "report.md"), [report.encode()])
    return record_key, stored.key, report


def store_drill_report(
    store: ArtefactStore, record_key: str
) -> tuple[DrillRecord, StoredFile, str]:
    """Render the drill record at `record_key` (citing its SHA-256) into `report.md` beside it;
    return the record, the stored report and its text. Deterministic: the same record gives the
    same bytes, whichever asset writes it."""
    raw = b"".join(store.iter_chunks(record_key))
    record = DrillRecord.from_dict(json.loads(raw))
    report = render_drill(record, store.location(record_key), hashlib.sha256(raw).hexdigest())
    stored = store.write_stream(posixpath.join(record.folder, REPORT_FILE), [report.encode()])
    return record, stored, report
