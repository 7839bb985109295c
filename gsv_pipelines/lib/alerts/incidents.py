"""Incidents: one per failing subject (a job and partition, or an asset check and partition),
opened by its first failure, deduplicated while it lasts, resolved by its first success.

Each incident is a JSON file in the artefact store (`alerts/incidents/<id>.json`), the same
store in every pod and across restarts of the daemon or the code server, and readable by the
`gsv alerts` command. Only subjects that have failed get a file. An observation older than (or
the same as) the last one applied to its subject changes nothing, so re-reading events after a
restart, or events that arrive out of order, never sends a message twice or reopens what
cleared.
"""

import hashlib
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gsv_pipelines.lib.alerts.messages import (
    FIRING,
    RESOLVED,
    SUMMARY_CHARS,
    Alert,
    clip,
    figures,
)
from gsv_pipelines.lib.core.store import ArtefactStore

INCIDENTS = "alerts/incidents"
OPEN = "open"
CLOSED = "resolved"


@dataclass(frozen=True)
class Observation:
    """One outcome of one subject: a run that ended, a check evaluated."""

    subject: dict[str, Any]  # kind: run | check; job, or asset and check; partition
    what: str  # "run" or the check's name
    label: str  # the job or asset, with the partition
    failed: bool
    at: float  # when it happened (Unix seconds)
    severity: str
    run_id: str
    domains: tuple[str, ...] = ()
    summary: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


def incident_id(subject: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(subject, sort_keys=True).encode()).hexdigest()[:16]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"


class Incidents:
    def __init__(self, store: ArtefactStore):
        self.store = store

    def _key(self, incident: str) -> str:
        return posixpath.join(INCIDENTS, f"{incident}.json")

    def get(self, incident: str) -> dict[str, Any] | None:
        try:
            return self.store.read_json(self._key(incident))
        except FileNotFoundError:
            return None

    def all(self) -> list[dict[str, Any]]:
        return [self.store.read_json(k) for k in self.store.glob(f"{INCIDENTS}/*.json")]

    def observe(self, seen: Observation, notify: Callable[[Alert], Any]) -> Alert | None:
        """Apply `seen`; the alert it caused (sent through `notify` first), if any."""
        incident = incident_id(seen.subject)
        state = self.get(incident)
        if state is not None and seen.at <= state["last_at"]:
            return None
        is_open = state is not None and state["status"] == OPEN
        if seen.failed and is_open:
            state.update(
                last_at=seen.at,
                last_run_id=seen.run_id,
                occurrences=state["occurrences"] + 1,
            )
            self.store.write_json_atomic(self._key(incident), state)
            return None
        if not seen.failed and not is_open:
            return None
        if seen.failed:
            alert = self._alert(incident, seen, FIRING, f"{seen.what} failed: {seen.label}")
            state = {
                "id": incident,
                "subject": seen.subject,
                "title": alert.title,
                "severity": seen.severity,
                "domains": list(seen.domains),
                "status": OPEN,
                "opened_at": alert.since,
                "opened_run_id": seen.run_id,
                "occurrences": 1,
            }
        else:
            lasted = seen.at - datetime.fromisoformat(state["opened_at"]).timestamp()
            summary = (
                f"Passing again after {_duration(lasted)} and {state['occurrences']} failure(s)"
                f" since {state['opened_at']}. {seen.summary}"
            )
            alert = self._alert(
                incident,
                seen,
                RESOLVED,
                f"{seen.what} recovered: {seen.label}",
                since=state["opened_at"],
                summary=summary,
                severity=state["severity"],
            )
            state.update(status=CLOSED, resolved_at=alert.at, resolved_run_id=seen.run_id)
        # Sent before the state is written: a crash in between repeats a message, never loses one.
        notify(alert)
        state.update(last_at=seen.at, last_run_id=seen.run_id)
        self.store.write_json_atomic(self._key(incident), state)
        return alert

    @staticmethod
    def _alert(
        incident: str,
        seen: Observation,
        status: str,
        title: str,
        since: str | None = None,
        summary: str | None = None,
        severity: str | None = None,
    ) -> Alert:
        return Alert(
            incident=incident,
            status=status,
            severity=severity or seen.severity,
            domains=seen.domains,
            title=title,
            summary=clip(seen.summary if summary is None else summary, SUMMARY_CHARS),
            since=since or _iso(seen.at),
            at=_iso(seen.at),
            subject=seen.subject,
            figures=figures(seen.figures),
            links=seen.links,
        )
