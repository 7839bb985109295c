"""The rotation policy YAML (`gsv_pipelines/policies/rotation.yaml`, overridable by path)."""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsv_pipelines.lib.core.policy_file import read_policy

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "rotation.yaml"
KINDS = ("postgres_password", "hmac_key", "api_key", "vault_database_static_role", "transit_key")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

# Keys every entry may have, and the settings each kind requires / allows.
COMMON = {"name", "kind", "mount", "path", "max_age_days", "grace_hours", "consumers"}
KIND_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "postgres_password": ({"roles", "admin_path"}, set()),
    # `field`: the key of the KV data that holds the value (default "key").
    "hmac_key": (set(), {"bytes", "field"}),
    "api_key": (set(), {"bytes", "prefix", "field"}),
    "vault_database_static_role": ({"role", "verify_dsn"}, {"database_mount"}),
    "transit_key": ({"key"}, {"transit_mount"}),
}


class RotationPolicyError(ValueError):
    """The rotation policy cannot be used; the message names the file, the secret and the key."""


@dataclass(frozen=True)
class Consumers:
    """What to nudge after a rotation: ExternalSecrets to resync, Deployments to restart."""

    external_secrets: tuple[tuple[str, str], ...] = ()  # (namespace, name)
    deployments: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SecretPolicy:
    name: str
    kind: str
    mount: str  # KV v2 mount holding the secret (or its rotation record)
    path: str
    max_age_days: float
    grace_hours: float
    settings: dict[str, Any] = field(default_factory=dict)
    consumers: Consumers = field(default_factory=Consumers)


@dataclass(frozen=True)
class RotationPolicy:
    secrets: tuple[SecretPolicy, ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.secrets]

    def get(self, name: str) -> SecretPolicy:
        for secret in self.secrets:
            if secret.name == name:
                return secret
        raise RotationPolicyError(f"no secret named {name!r} in {self.source}")


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise RotationPolicyError(f"{where} must be a positive number, not {value!r}")
    return value


def _pairs(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise RotationPolicyError(f"{where} must be a list of namespace/name")
    pairs = []
    for item in value:
        namespace, _, name = str(item).partition("/")
        if not namespace or not name:
            raise RotationPolicyError(f"{where}: {item!r} is not namespace/name")
        pairs.append((namespace, name))
    return tuple(pairs)


def _secret(entry: Any, defaults: dict[str, Any], where: str) -> SecretPolicy:
    if not isinstance(entry, dict):
        raise RotationPolicyError(f"{where} must be a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise RotationPolicyError(
            f"{where}.name must be lowercase letters, digits and dashes, not {name!r}"
        )
    where = f"{where} ({name})"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise RotationPolicyError(f"{where}.kind must be one of {', '.join(KINDS)}, not {kind!r}")
    required, optional = KIND_KEYS[kind]
    unknown = set(entry) - COMMON - required - optional
    if unknown:
        raise RotationPolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = {"path", *required} - set(entry)
    if missing:
        raise RotationPolicyError(f"{where}: missing {', '.join(sorted(missing))}")
    if kind == "postgres_password":
        roles = entry["roles"]
        if not (isinstance(roles, list) and len(roles) == 2 and len(set(roles)) == 2):
            raise RotationPolicyError(f"{where}.roles must be two different login roles (A/B)")
    consumers = entry.get("consumers") or {}
    if not isinstance(consumers, dict) or set(consumers) - {"external_secrets", "deployments"}:
        raise RotationPolicyError(f"{where}.consumers takes external_secrets and deployments")
    return SecretPolicy(
        name=name,
        kind=kind,
        mount=str(entry.get("mount", defaults.get("mount", "secret"))),
        path=str(entry["path"]),
        max_age_days=_positive(
            entry.get("max_age_days", defaults.get("max_age_days", 90)), f"{where}.max_age_days"
        ),
        grace_hours=_positive(
            entry.get("grace_hours", defaults.get("grace_hours", 24)), f"{where}.grace_hours"
        ),
        settings={k: entry[k] for k in (required | optional) if k in entry},
        consumers=Consumers(
            external_secrets=_pairs(
                consumers.get("external_secrets", []), f"{where}.consumers.external_secrets"
            ),
            deployments=_pairs(consumers.get("deployments", []), f"{where}.consumers.deployments"),
        ),
    )


def load_rotation_policy(path: str | Path | None = None) -> RotationPolicy:
    """Read and validate the policy at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else DEFAULT_POLICY
    data = read_policy(path, "rotation policy", RotationPolicyError)
    if not isinstance(data, dict) or set(data) - {"defaults", "secrets"}:
        raise RotationPolicyError(f"rotation policy {path} takes `defaults` and `secrets` only")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - {"mount", "max_age_days", "grace_hours"}:
        raise RotationPolicyError(f"{path}: defaults takes mount, max_age_days, grace_hours")
    entries = data.get("secrets") or []
    if not isinstance(entries, list):
        raise RotationPolicyError(f"{path}: secrets must be a list")
    secrets = tuple(
        _secret(entry, defaults, f"{path}: secrets[{i}]") for i, entry in enumerate(entries)
    )
    names = [s.name for s in secrets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RotationPolicyError(f"{path}: secret names must be unique: {', '.join(duplicates)}")
    return RotationPolicy(secrets=secrets, source=str(path))
