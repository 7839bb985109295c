"""The backup policy YAML (`gsv_pipelines/policies/backups.yaml`, overridable by path)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsv_pipelines.lib.backups.retention import RetentionPolicy, RetentionPolicyError
from gsv_pipelines.lib.core.policy_file import read_policy

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "backups.yaml"
METHODS = ("auto", "export", "snapshot")
TARGET_KEYS = {"method", "rpo_hours", "batch_size", "retention"}


class BackupPolicyError(ValueError):
    """The backup policy file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class TargetPolicy:
    method: str = "auto"
    rpo_hours: float = 26
    batch_size: int = 1000
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)


@dataclass(frozen=True)
class BackupPolicy:
    defaults: TargetPolicy
    collections: dict[str, TargetPolicy]
    platform_db: TargetPolicy
    vault: TargetPolicy
    qdrant_nodes: tuple[str, ...]
    source: str

    def for_collection(self, name: str) -> TargetPolicy:
        return self.collections.get(name, self.defaults)


def _target(data: Any, base: TargetPolicy | None, where: str) -> TargetPolicy:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BackupPolicyError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = set(data) - TARGET_KEYS
    if unknown:
        raise BackupPolicyError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(TARGET_KEYS))}"
        )
    base = base or TargetPolicy()
    method = data.get("method", base.method)
    if method not in METHODS:
        raise BackupPolicyError(
            f"{where}.method must be one of {', '.join(METHODS)}, not {method!r}"
        )
    rpo = data.get("rpo_hours", base.rpo_hours)
    if isinstance(rpo, bool) or not isinstance(rpo, int | float) or rpo <= 0:
        raise BackupPolicyError(f"{where}.rpo_hours must be a positive number, not {rpo!r}")
    batch = data.get("batch_size", base.batch_size)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BackupPolicyError(f"{where}.batch_size must be a positive integer, not {batch!r}")
    retention = base.retention
    if "retention" in data:
        try:
            retention = RetentionPolicy.from_dict(data["retention"] or {})
        except RetentionPolicyError as exc:
            raise BackupPolicyError(f"{where}.retention: {exc}") from None
    return TargetPolicy(method=method, rpo_hours=rpo, batch_size=batch, retention=retention)


def load_backup_policy(path: str | Path | None = None) -> BackupPolicy:
    """Read and validate the policy at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else DEFAULT_POLICY
    data = read_policy(path, "backup policy", BackupPolicyError)
    if not isinstance(data, dict):
        raise BackupPolicyError(f"backup policy {path} must be a mapping")
    known = {"defaults", "collections", "platform_db", "vault", "qdrant_nodes"}
    if set(data) - known:
        raise BackupPolicyError(
            f"backup policy {path}: unknown key(s) {', '.join(sorted(set(data) - known))}"
        )
    defaults = _target(data.get("defaults"), None, f"{path}: defaults")
    collections = data.get("collections") or {}
    if not isinstance(collections, dict):
        raise BackupPolicyError(f"{path}: collections must be a mapping of collection names")
    nodes = data.get("qdrant_nodes") or []
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise BackupPolicyError(f"{path}: qdrant_nodes must be a list of URLs")
    return BackupPolicy(
        defaults=defaults,
        collections={
            name: _target(value, defaults, f"{path}: collections.{name}")
            for name, value in collections.items()
        },
        platform_db=_target(data.get("platform_db"), defaults, f"{path}: platform_db"),
        vault=_target(data.get("vault"), defaults, f"{path}: vault"),
        qdrant_nodes=tuple(n.rstrip("/") for n in nodes),
        source=str(path),
    )
