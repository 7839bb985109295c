"""The DR drill policy YAML (`gsv_pipelines/policies/drills.yaml`, overridable by path)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsv_pipelines.lib.core.policy_file import read_policy

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "drills.yaml"
KINDS = ("qdrant", "platform_db", "vault")
DEFAULT_SCRATCH_NAME = "gsv_drill_{target}_{stamp}"
TARGET_KEYS = {"rto_minutes", "rpo_hours", "scratch_name"}
QDRANT_KEYS = TARGET_KEYS | {
    "collections",
    "compare_all_up_to",
    "sample_size",
    "seed",
    "overrides",
}


class DrillPolicyError(ValueError):
    """The drill policy file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Objectives:
    """Recovery objectives of one target, in seconds."""

    rto_seconds: float
    rpo_seconds: float


@dataclass(frozen=True)
class KindPolicy:
    objectives: Objectives
    scratch_name: str = DEFAULT_SCRATCH_NAME


@dataclass(frozen=True)
class QdrantDrillPolicy(KindPolicy):
    collections: tuple[str, ...] | None = None  # None: every known collection
    compare_all_up_to: int = 20000
    sample_size: int = 2000
    seed: int = 12
    overrides: dict[str, Objectives] = field(default_factory=dict)

    def objectives_for(self, collection: str) -> Objectives:
        return self.overrides.get(collection, self.objectives)


@dataclass(frozen=True)
class VaultDrillPolicy(KindPolicy):
    # The environment variable holding the source cluster's unseal keys (comma-separated).
    unseal_keys_env: str | None = None


@dataclass(frozen=True)
class DrillPolicy:
    qdrant: QdrantDrillPolicy | None
    platform_db: KindPolicy | None
    vault: VaultDrillPolicy | None
    scratch_dir: Path | None
    source: str


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DrillPolicyError(f"{where} must be a positive number, not {value!r}")
    return float(value)


def _integer(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DrillPolicyError(f"{where} must be an integer of at least {minimum}, not {value!r}")
    return value


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DrillPolicyError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def _known(data: dict, keys: set[str], where: str) -> None:
    unknown = set(data) - keys
    if unknown:
        raise DrillPolicyError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(keys))}"
        )


def _objectives(data: dict, base: Objectives, where: str) -> Objectives:
    rto = base.rto_seconds
    rpo = base.rpo_seconds
    if "rto_minutes" in data:
        rto = _number(data["rto_minutes"], f"{where}.rto_minutes") * 60
    if "rpo_hours" in data:
        rpo = _number(data["rpo_hours"], f"{where}.rpo_hours") * 3600
    return Objectives(rto_seconds=rto, rpo_seconds=rpo)


def _scratch_name(data: dict, where: str) -> str:
    template = data.get("scratch_name", DEFAULT_SCRATCH_NAME)
    if not isinstance(template, str) or "{target}" not in template:
        raise DrillPolicyError(f"{where}.scratch_name must be a text with {{target}} in it")
    try:
        template.format(target="t", stamp="s")
    except (KeyError, IndexError, ValueError) as exc:
        raise DrillPolicyError(
            f"{where}.scratch_name: only {{target}} and {{stamp}} may be used ({exc})"
        ) from None
    return template


def _qdrant(data: dict, base: Objectives, where: str) -> QdrantDrillPolicy:
    _known(data, QDRANT_KEYS, where)
    collections = data.get("collections", "*")
    if collections == "*":
        names = None
    elif isinstance(collections, list) and all(isinstance(c, str) and c for c in collections):
        names = tuple(collections)
    else:
        raise DrillPolicyError(f'{where}.collections must be "*" or a list of collection names')
    objectives = _objectives(data, base, where)
    overrides = {}
    for name, value in _mapping(data.get("overrides"), f"{where}.overrides").items():
        value = _mapping(value, f"{where}.overrides.{name}")
        _known(value, {"rto_minutes", "rpo_hours"}, f"{where}.overrides.{name}")
        overrides[str(name)] = _objectives(value, objectives, f"{where}.overrides.{name}")
    return QdrantDrillPolicy(
        objectives=objectives,
        scratch_name=_scratch_name(data, where),
        collections=names,
        compare_all_up_to=_integer(
            data.get("compare_all_up_to", 20000), f"{where}.compare_all_up_to", 0
        ),
        sample_size=_integer(data.get("sample_size", 2000), f"{where}.sample_size"),
        seed=_integer(data.get("seed", 12), f"{where}.seed", 0),
        overrides=overrides,
    )


def _kind(data: dict, base: Objectives, where: str) -> KindPolicy:
    _known(data, TARGET_KEYS, where)
    return KindPolicy(
        objectives=_objectives(data, base, where), scratch_name=_scratch_name(data, where)
    )


def _vault(data: dict, base: Objectives, where: str) -> VaultDrillPolicy:
    _known(data, TARGET_KEYS | {"unseal_keys_env"}, where)
    variable = data.get("unseal_keys_env")
    if variable is not None and (not isinstance(variable, str) or not variable.isidentifier()):
        raise DrillPolicyError(f"{where}.unseal_keys_env must name an environment variable")
    return VaultDrillPolicy(
        objectives=_objectives(data, base, where),
        scratch_name=_scratch_name(data, where),
        unseal_keys_env=variable,
    )


def load_drill_policy(path: str | Path | None = None) -> DrillPolicy:
    """Read and validate the policy at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else DEFAULT_POLICY
    data = read_policy(path, "drill policy", DrillPolicyError)
    if not isinstance(data, dict):
        raise DrillPolicyError(f"drill policy {path} must be a mapping")
    _known(data, {"defaults", "targets", "scratch_dir"}, f"drill policy {path}")
    defaults = _mapping(data.get("defaults"), f"{path}: defaults")
    _known(defaults, {"rto_minutes", "rpo_hours"}, f"{path}: defaults")
    base = _objectives(defaults, Objectives(30 * 60, 26 * 3600), f"{path}: defaults")
    targets = _mapping(data.get("targets"), f"{path}: targets")
    _known(targets, set(KINDS), f"{path}: targets")

    def section(kind: str) -> dict | None:
        if kind not in targets:
            return None
        return _mapping(targets[kind], f"{path}: targets.{kind}")

    qdrant, database, vault = section("qdrant"), section("platform_db"), section("vault")
    scratch_dir = data.get("scratch_dir")
    if scratch_dir is not None and (not isinstance(scratch_dir, str) or not scratch_dir):
        raise DrillPolicyError(f"{path}: scratch_dir must be a path")
    return DrillPolicy(
        qdrant=None if qdrant is None else _qdrant(qdrant, base, f"{path}: targets.qdrant"),
        platform_db=None
        if database is None
        else _kind(database, base, f"{path}: targets.platform_db"),
        vault=None if vault is None else _vault(vault, base, f"{path}: targets.vault"),
        scratch_dir=Path(scratch_dir).expanduser().absolute() if scratch_dir else None,
        source=str(path),
    )
