"""hmac_key and api_key: a new random key becomes current, the previous one stays valid as
`previous_<field>` until the grace period ends, so signatures made with either verify during the
overlap; a later run retires it.

KV data: {<field>: current, previous_<field>: previous, previous_until: ISO time, rotated_at}.
"""

import hashlib
import secrets

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.rotation.rotate import (
    Context,
    Outcome,
    RotationError,
    age_days,
    grace_over,
    rollback_kv,
)


def _fingerprint(value: str) -> str:
    # Enough to tell keys apart in the journal, useless to an attacker.
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class KeyRotator:
    def new_value(self, ctx: Context) -> str:
        return secrets.token_hex(int(ctx.secret.settings.get("bytes", 32)))

    def run(self, ctx: Context) -> Outcome:
        secret, journal = ctx.secret, ctx.journal
        field = secret.settings.get("field", "key")
        current = vault_kv.read(ctx.client, secret.mount, secret.path)
        journal.record(
            "read", version=current.version, age_days=round(age_days(current, ctx.now), 3)
        )
        if field not in current.data:
            raise RotationError(f"{secret.mount}/{secret.path} has no field {field!r} to rotate")
        journal.protect(current.data[field])
        previous = f"previous_{field}"
        outcome = Outcome(
            secret.name, secret.kind, "nothing due", "", version_before=current.version
        )

        if previous in current.data:
            journal.protect(current.data[previous])
            if not grace_over(current.data, ctx.now):
                outcome.action, outcome.reason = (
                    "deferred",
                    (f"previous key valid until {current.data['previous_until']}"),
                )
                return outcome
            data = {k: v for k, v in current.data.items() if k not in (previous, "previous_until")}
            version = vault_kv.write(
                ctx.client, secret.mount, secret.path, data, cas=current.version
            )
            journal.record("previous_retired", version=version)
            outcome.action, outcome.reason, outcome.version_after = (
                "retired",
                "grace period over: previous key removed",
                version,
            )
            return outcome

        if not ctx.is_due(current):
            outcome.reason = (
                f"{age_days(current, ctx.now):.1f} days old, rotated after {secret.max_age_days:g}"
            )
            return outcome

        new = journal.protect(self.new_value(ctx))
        data = {
            **current.data,
            field: new,
            previous: current.data[field],
            "previous_until": ctx.grace_end(),
            "rotated_at": ctx.now.isoformat(),
        }
        version = vault_kv.write(ctx.client, secret.mount, secret.path, data, cas=current.version)
        try:
            journal.record("kv_written", version=version, fingerprint=_fingerprint(new))
            check = vault_kv.read(ctx.client, secret.mount, secret.path)
            if check.version != version or check.data.get(field) != new:
                raise RotationError("Vault does not return the key just written as current")
            journal.record("verified", version=version)
        except BaseException:
            rollback_kv(ctx, current, version)
            raise
        outcome.action, outcome.reason, outcome.version_after = (
            "rotated",
            "forced" if ctx.force else f"older than {secret.max_age_days:g} days",
            version,
        )
        return outcome


class HmacKeyRotator(KeyRotator):
    """A hex key of `bytes` random bytes (default 32)."""


class ApiKeyRotator(KeyRotator):
    """A URL-safe token of `bytes` random bytes, after an optional `prefix`."""

    def new_value(self, ctx: Context) -> str:
        prefix = ctx.secret.settings.get("prefix", "")
        return prefix + secrets.token_urlsafe(int(ctx.secret.settings.get("bytes", 32)))
