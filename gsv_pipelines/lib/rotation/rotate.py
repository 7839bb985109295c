"""The rotation engine: one secret, one run, one state machine per kind, every step journaled.

A run of a secret does at most one thing: retire what a previous rotation left in its grace
period (once that period is over), or rotate (when the secret is due, or when forced), or
nothing. Each step is recorded in the journal by name with facts that are never secret values
(versions, role names, timestamps). A failure after a change rolls the change back (the
previous KV version current again, the target restored) and is raised as `RotationError`.

Each kind is a `Rotator` in gsv_pipelines/lib/rotation/rotators/, listed in `ROTATORS`.
"""

import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import hvac

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.rotation.policy import SecretPolicy


class RotationError(RuntimeError):
    """A rotation failed; the message says where, and whether it was rolled back."""


class InjectedFailure(RuntimeError):
    """Raised by the journal at a chosen step: how tests break a rotation mid-way."""


@dataclass
class Step:
    name: str
    at: str
    facts: dict[str, Any]


@dataclass
class Journal:
    """The steps of one run. `fail_after` names a step to fail right after (tests only)."""

    steps: list[Step] = field(default_factory=list)
    fail_after: str | None = None
    # Values generated or read during the run: scrubbed from any error message.
    secrets: set[str] = field(default_factory=set, repr=False)

    def protect(self, value: str) -> str:
        if value:
            self.secrets.add(str(value))
        return value

    def scrub(self, text: str) -> str:
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    def record(self, name: str, **facts: Any) -> None:
        self.steps.append(Step(name, datetime.now(UTC).isoformat(), facts))
        if name == self.fail_after:
            raise InjectedFailure(f"failure injected after step {name!r}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]


@dataclass
class Outcome:
    secret: str
    kind: str
    action: str  # "rotated", "retired", "nothing due", "deferred"
    reason: str
    version_before: int | None = None
    version_after: int | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Context:
    """What a rotator works with."""

    client: hvac.Client
    secret: SecretPolicy
    now: datetime
    journal: Journal
    force: bool = False

    def grace_end(self) -> str:
        return (self.now + timedelta(hours=self.secret.grace_hours)).isoformat()

    def is_due(self, current: vault_kv.KvSecret) -> bool:
        return self.force or age_days(current, self.now) >= self.secret.max_age_days


class Rotator(Protocol):
    def run(self, ctx: Context) -> Outcome: ...


# Each kind's rotator, imported when used (the rotators build on this module).
ROTATORS = {
    "hmac_key": "gsv_pipelines.lib.rotation.rotators.keys:HmacKeyRotator",
    "api_key": "gsv_pipelines.lib.rotation.rotators.keys:ApiKeyRotator",
    "postgres_password": "gsv_pipelines.lib.rotation.rotators.postgres:PostgresPasswordRotator",
    "vault_database_static_role": (
        "gsv_pipelines.lib.rotation.rotators.vault_database:StaticRoleRotator"
    ),
    "transit_key": "gsv_pipelines.lib.rotation.rotators.transit:TransitKeyRotator",
}


def rotator(kind: str) -> Rotator:
    module, _, name = ROTATORS[kind].partition(":")
    return getattr(importlib.import_module(module), name)()


def rotated_at(current: vault_kv.KvSecret) -> datetime:
    """When the value was last rotated: `rotated_at` in its data, else when it was written.

    Not the version's time: retiring a previous value writes a version without rotating.
    """
    stamp = current.data.get("rotated_at")
    return datetime.fromisoformat(stamp) if stamp else current.created_time


def age_days(current: vault_kv.KvSecret, now: datetime) -> float:
    return (now - rotated_at(current)).total_seconds() / 86400


# Data fields where a rotation leaves the end of its grace period (keys, A/B roles; transit).
PENDING_FIELDS = ("previous_until", "raise_min_decryption_after")


@dataclass(frozen=True)
class SecretStatus:
    name: str
    kind: str
    version: int
    rotated_at: datetime
    age_days: float
    due_at: datetime
    overdue: bool
    grace_ends_at: datetime | None  # a previous value still valid until then

    def needs_run(self, now: datetime) -> bool:
        return self.overdue or (self.grace_ends_at is not None and self.grace_ends_at <= now)


def status(client: hvac.Client, secret: SecretPolicy, now: datetime) -> SecretStatus:
    """Where a secret stands, from its KV metadata and data (nothing is changed)."""
    current = vault_kv.read(client, secret.mount, secret.path)
    when = rotated_at(current)
    due = when + timedelta(days=secret.max_age_days)
    pending = next((current.data[f] for f in PENDING_FIELDS if current.data.get(f)), None)
    return SecretStatus(
        name=secret.name,
        kind=secret.kind,
        version=current.version,
        rotated_at=when,
        age_days=round(age_days(current, now), 3),
        due_at=due,
        overdue=now >= due,
        grace_ends_at=datetime.fromisoformat(pending) if pending else None,
    )


def read_record(ctx: Context) -> vault_kv.KvSecret | None:
    """The KV rotation record of a Vault-engine kind (transit, database), None before the first."""
    try:
        return vault_kv.read(ctx.client, ctx.secret.mount, ctx.secret.path)
    except vault_kv.SecretMissing:
        return None  # first run: the record is created with CAS 0


def write_record(ctx: Context, record: vault_kv.KvSecret | None, data: dict[str, Any]) -> int:
    """Merge `data` into the record, check-and-set against the version that was read."""
    return vault_kv.write(
        ctx.client,
        ctx.secret.mount,
        ctx.secret.path,
        {**(record.data if record else {}), **data},
        cas=record.version if record else 0,
    )


def grace_over(data: dict[str, Any], now: datetime, key: str = "previous_until") -> bool:
    until = data.get(key)
    return bool(until) and datetime.fromisoformat(until) <= now


def rollback_kv(ctx: Context, before: vault_kv.KvSecret, written_version: int) -> None:
    """Make the data of `before` current again, as a new version (only if ours is current)."""
    restored = vault_kv.write(
        ctx.client, before.mount, before.path, before.data, cas=written_version
    )
    ctx.journal.record("kv_rolled_back", restored_from=before.version, version=restored)


def rotate(
    client: hvac.Client,
    secret: SecretPolicy,
    *,
    now: datetime | None = None,
    force: bool = False,
    journal: Journal | None = None,
) -> Outcome:
    """Run the secret's state machine once."""
    journal = journal if journal is not None else Journal()
    ctx = Context(client, secret, now or datetime.now(UTC), journal, force)
    try:
        outcome = rotator(secret.kind).run(ctx)
    except (vault_kv.KvError, RotationError):
        raise
    except Exception as exc:
        # The message names where it broke; the rotator has rolled back what it changed.
        raise RotationError(
            f"rotation of {secret.name} ({secret.kind}) failed after steps "
            f"{journal.names or ['none']}: {type(exc).__name__}: {journal.scrub(str(exc))}"
        ) from None
    outcome.steps = journal.steps
    return outcome
