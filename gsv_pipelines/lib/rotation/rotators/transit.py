"""transit_key: a new version of a Vault (or OpenBao) transit key encrypts from now on; the older
versions still decrypt until the grace period ends, then a later run raises the key's
`min_decryption_version` to the version that rotation made, so older ciphertexts stop decrypting
(that is the point: re-encrypt or rewrap them within the grace period).

A new version is proved by encrypting a random probe with it and decrypting it again. Vault cannot
un-rotate a transit key: a failure after the rotation leaves the new version in place, says so,
and leaves `min_decryption_version` alone.

Due-ness comes from the record's `rotated_at` while the record is about the key's latest version,
else (no record yet, or a version made outside this pipeline) from that version's creation time;
a run that is not due then brings the record up to date ("record_synced").

The secret's KV path holds the rotation record, never key material:
{rotated_at, key_version, previous_version, raise_min_decryption_after (while pending)}.
"""

import base64
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import hvac.exceptions
import requests

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.vault_kv import access_problem
from gsv_pipelines.lib.rotation.rotate import (
    Context,
    Outcome,
    RotationError,
    grace_over,
    read_record,
)

PENDING = "raise_min_decryption_after"


def _refused(ctx: Context, exc: Exception, what: str, mount: str, key: str) -> RotationError:
    where = f"transit key {key!r} at {mount}/"
    message = " ".join(str(exc).split())
    common = access_problem(exc, what, where)
    if common:
        return RotationError(f"{ctx.secret.name}: {ctx.journal.scrub(common)}")
    if isinstance(exc, hvac.exceptions.InvalidPath) and "no handler for route" in message:
        reason = f"no transit secrets engine is mounted at {mount}/ (for {key!r})"
    # Reading an absent key is a bare 404; rotating one is "key not found".
    elif isinstance(exc, hvac.exceptions.InvalidPath) or "key not found" in message:
        reason = f"no transit key {key!r} at {mount}/"
    else:
        reason = f"Vault refused to {what} {where}: {type(exc).__name__}: {message}"
    return RotationError(f"{ctx.secret.name}: {ctx.journal.scrub(reason)}")


def _created(key: dict[str, Any], version: int) -> datetime:
    # Symmetric keys list a Unix time per version, asymmetric ones a mapping with creation_time.
    entry = key["keys"][str(version)]
    if isinstance(entry, dict):
        return datetime.fromisoformat(entry["creation_time"])
    return datetime.fromtimestamp(entry, UTC)


class TransitKeyRotator:
    def run(self, ctx: Context) -> Outcome:
        secret, journal = ctx.secret, ctx.journal
        name = str(secret.settings["key"])
        mount = str(secret.settings.get("transit_mount", "transit"))
        transit = ctx.client.secrets.transit

        def vault(what: str, call):
            try:
                return call()
            except (requests.RequestException, hvac.exceptions.VaultError) as exc:
                raise _refused(ctx, exc, what, mount, name) from None

        def read_key() -> dict[str, Any]:
            return vault("read", lambda: transit.read_key(name, mount_point=mount)["data"])

        def write_record(data: dict[str, Any]) -> int:
            return vault_kv.write(
                ctx.client,
                secret.mount,
                secret.path,
                data,
                cas=record.version if record else 0,
            )

        record = read_record(ctx)
        data = record.data if record else {}
        key = read_key()
        latest, min_decryption = key["latest_version"], key["min_decryption_version"]
        in_sync = data.get("key_version") == latest and bool(data.get("rotated_at"))
        rotated_at = (
            datetime.fromisoformat(data["rotated_at"]) if in_sync else _created(key, latest)
        )
        age = (ctx.now - rotated_at).total_seconds() / 86400
        journal.record(
            "read",
            key_version=latest,
            min_decryption_version=min_decryption,
            age_days=round(age, 3),
            record_version=record.version if record else None,
        )
        outcome = Outcome(
            secret.name,
            secret.kind,
            "nothing due",
            "",
            version_before=record.version if record else None,
        )

        if data.get(PENDING):
            if not grace_over(data, ctx.now, PENDING):
                outcome.action, outcome.reason = (
                    "deferred",
                    f"versions before {data.get('key_version')} decrypt until {data[PENDING]}",
                )
                return outcome
            target = data.get("key_version")
            if not isinstance(target, int) or not 1 <= target <= latest:
                raise RotationError(
                    f"{secret.name}: the record at {secret.mount}/{secret.path} names key version "
                    f"{target!r}, but {mount}/keys/{name} is at version {latest}: "
                    "min_decryption_version not raised"
                )
            if min_decryption < target:
                vault(
                    "raise min_decryption_version of",
                    lambda: transit.update_key_configuration(
                        name, min_decryption_version=target, mount_point=mount
                    ),
                )
                raised = read_key()["min_decryption_version"]
                if raised != target:
                    raise RotationError(
                        f"{secret.name}: {mount}/keys/{name} reports min_decryption_version "
                        f"{raised} after it was set to {target}"
                    )
                journal.record(
                    "min_decryption_raised", previous=min_decryption, min_decryption_version=target
                )
            try:
                version = write_record({k: v for k, v in data.items() if k != PENDING})
            except vault_kv.KvError as exc:
                raise RotationError(
                    f"{secret.name}: min_decryption_version of {mount}/keys/{name} is {target}, "
                    f"but the record could not be updated ({exc}); the next run finds it raised "
                    "and only updates the record"
                ) from None
            journal.record("record_written", version=version)
            outcome.action, outcome.reason, outcome.version_after = (
                "retired",
                f"grace period over: min_decryption_version {min_decryption} -> {target}, "
                "older ciphertexts no longer decrypt",
                version,
            )
            return outcome

        if not (ctx.force or age >= secret.max_age_days):
            outcome.reason = (
                f"version {latest} is {age:.1f} days old, rotated after {secret.max_age_days:g}"
            )
            if not in_sync:
                outcome.version_after = write_record(
                    {**data, "rotated_at": rotated_at.isoformat(), "key_version": latest}
                )
                journal.record("record_synced", version=outcome.version_after)
                outcome.reason += "; rotation record brought up to date"
            return outcome

        if not (key.get("supports_encryption") and key.get("supports_decryption")):
            raise RotationError(
                f"{secret.name}: {mount}/keys/{name} is a {key.get('type')} key, which does not "
                "encrypt: a new version could not be verified, so it was not rotated"
            )
        vault("rotate", lambda: transit.rotate_key(name, mount_point=mount))
        new: int | None = None
        try:
            new = read_key()["latest_version"]
            if new <= latest:
                raise RotationError(f"Vault still reports version {new} as the latest")
            journal.record("key_rotated", previous_version=latest, key_version=new)
            _verify(ctx, vault, name, mount, new, derived=bool(key.get("derived")))
            journal.record("verified", key_version=new)
            grace_end = ctx.grace_end()
            version = write_record(
                {
                    **data,
                    "rotated_at": ctx.now.isoformat(),
                    "key_version": new,
                    "previous_version": latest,
                    PENDING: grace_end,
                }
            )
            journal.record("record_written", version=version, **{PENDING: grace_end})
        except Exception as exc:
            detail = (
                str(exc)
                if isinstance(exc, RotationError | vault_kv.KvError)
                else f"{type(exc).__name__}: {exc}"
            )
            if "record_written" in journal.names:
                state = f"version {new} is verified and recorded"
            elif "verified" in journal.names:
                state = (
                    f"version {new} is verified but not recorded: raise min_decryption_version "
                    f"to {new} by hand once the grace period is over"
                )
            else:
                state = (
                    f"the new version ({new or 'unknown'}) exists, encrypts from now on, "
                    "and is UNVERIFIED"
                )
            raise RotationError(
                f"rotation of {secret.name} ({secret.kind}) of {mount}/keys/{name} failed after "
                f"steps {journal.names}: {journal.scrub(detail)}. Vault cannot un-rotate a transit "
                f"key: {state}; min_decryption_version was left at {min_decryption}"
            ) from None
        outcome.action, outcome.reason, outcome.version_after = (
            "rotated",
            ("forced" if ctx.force else f"older than {secret.max_age_days:g} days")
            + f": key version {latest} -> {new}",
            version,
        )
        return outcome


def _verify(
    ctx: Context, vault: Callable, name: str, mount: str, version: int, derived: bool
) -> None:
    """Encrypt a random probe with `version` and decrypt it (neither is journaled)."""
    transit = ctx.client.secrets.transit
    probe = ctx.journal.protect(base64.b64encode(secrets.token_bytes(32)).decode())
    # Derived keys need a per-request context; any will do for a round trip.
    context = base64.b64encode(secrets.token_bytes(16)).decode() if derived else None
    ciphertext = vault(
        "encrypt with",
        lambda: transit.encrypt_data(
            name, plaintext=probe, context=context, key_version=version, mount_point=mount
        )["data"]["ciphertext"],
    )
    ctx.journal.protect(ciphertext)
    # The ciphertext names its version: "vault:v<N>:…".
    if ciphertext.split(":")[1:2] != [f"v{version}"]:
        raise RotationError(f"the probe was not encrypted with key version {version}")
    plaintext = vault(
        "decrypt with",
        lambda: transit.decrypt_data(
            name, ciphertext=ciphertext, context=context, mount_point=mount
        )["data"]["plaintext"],
    )
    if plaintext != probe:
        raise RotationError(f"key version {version} does not decrypt what it encrypted")
