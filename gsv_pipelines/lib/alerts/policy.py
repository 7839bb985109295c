"""The alerts policy YAML (`gsv_pipelines/policies/alerts.yaml`, overridable by path): routes by
severity and domain to channels, recoveries, and how hard delivery tries."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsv_pipelines.lib.core.policy_file import read_policy

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "alerts.yaml"
CHANNELS = ("slack", "teams", "webhook")
DOMAINS = ("backups", "drills", "rotation", "scanning", "usage")
# An asset check's severity (Dagster's AssetCheckSeverity value) as an alert's; a failed run is
# an error. This is the one place a failed WARN check is told from a failed ERROR check.
CHECK_SEVERITIES = {"ERROR": "error", "WARN": "warning"}
SEVERITIES = tuple(CHECK_SEVERITIES.values())


class AlertsPolicyError(ValueError):
    """The alerts policy file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Route:
    name: str
    severities: frozenset[str]
    channels: tuple[str, ...]
    domains: frozenset[str] | None = None  # None: every domain, and alerts without one

    def matches(self, severity: str, domains: tuple[str, ...]) -> bool:
        if severity not in self.severities:
            return False
        return self.domains is None or bool(self.domains & set(domains))


@dataclass(frozen=True)
class Delivery:
    timeout_seconds: float = 5.0
    retries: int = 2
    backoff_seconds: float = 0.5
    cooldown_seconds: float = 60.0


@dataclass(frozen=True)
class AlertsPolicy:
    routes: tuple[Route, ...]
    recoveries: bool
    delivery: Delivery
    source: str

    def channels_for(self, severity: str, domains: tuple[str, ...]) -> tuple[str, ...]:
        """The channels of every route the alert matches, each once, in CHANNELS order."""
        chosen = {c for r in self.routes if r.matches(severity, domains) for c in r.channels}
        return tuple(c for c in CHANNELS if c in chosen)


def alert_severity(check_severity: str) -> str:
    """`error` or `warning` for a check severity (`ERROR`, `WARN`)."""
    return CHECK_SEVERITIES[check_severity]


def _names(value: Any, known: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise AlertsPolicyError(f"{where} must be a non-empty list of names")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise AlertsPolicyError(f"{where}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(value)


def _route(data: Any, where: str) -> Route:
    if not isinstance(data, dict):
        raise AlertsPolicyError(f"{where} must be a mapping")
    unknown = set(data) - {"name", "severities", "domains", "channels"}
    if unknown:
        raise AlertsPolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise AlertsPolicyError(f"{where}.name must be a non-empty string")
    domains = data.get("domains")
    return Route(
        name=name,
        severities=frozenset(_names(data.get("severities"), SEVERITIES, f"{where}.severities")),
        channels=_names(data.get("channels"), CHANNELS, f"{where}.channels"),
        domains=None
        if domains is None
        else frozenset(_names(domains, DOMAINS, f"{where}.domains")),
    )


def _delivery(data: Any, where: str) -> Delivery:
    if data is None:
        return Delivery()
    if not isinstance(data, dict):
        raise AlertsPolicyError(f"{where} must be a mapping")
    defaults = Delivery()
    values = {}
    for key in ("timeout_seconds", "retries", "backoff_seconds", "cooldown_seconds"):
        value = data.get(key, getattr(defaults, key))
        integer, positive = key == "retries", key == "timeout_seconds"
        valid = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not valid or value < 0 or (positive and not value):
            kind = "a non-negative integer" if integer else "a non-negative number"
            kind = "a positive number" if positive else kind
            raise AlertsPolicyError(f"{where}.{key} must be {kind}, not {value!r}")
        values[key] = value
    unknown = set(data) - set(values)
    if unknown:
        raise AlertsPolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return Delivery(**values)


def load_alerts_policy(path: str | Path | None = None) -> AlertsPolicy:
    """Read and validate the policy at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else DEFAULT_POLICY
    data = read_policy(path, "alerts policy", AlertsPolicyError)
    where = f"alerts policy {path}"
    if not isinstance(data, dict):
        raise AlertsPolicyError(f"{where} must be a mapping")
    unknown = set(data) - {"routes", "recoveries", "delivery"}
    if unknown:
        raise AlertsPolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    routes = data.get("routes") or []
    if not isinstance(routes, list):
        raise AlertsPolicyError(f"{where}: routes must be a list")
    recoveries = data.get("recoveries", True)
    if not isinstance(recoveries, bool):
        raise AlertsPolicyError(f"{where}: recoveries must be true or false")
    return AlertsPolicy(
        routes=tuple(_route(r, f"{where}: routes[{i}]") for i, r in enumerate(routes)),
        recoveries=recoveries,
        delivery=_delivery(data.get("delivery"), f"{where}: delivery"),
        source=str(path),
    )
