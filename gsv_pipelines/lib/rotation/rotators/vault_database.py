"""vault_database_static_role: Vault (or OpenBao) owns the password of a PostgreSQL login role
through its database secrets engine; a run asks Vault to rotate it now, then proves that the new
password really logs in.

Applications read the password from `<database_mount>/static-creds/<role>`; Vault changes it in
PostgreSQL and keeps it. There is no previous password kept valid and nothing to roll back.

Due-ness comes from Vault's `last_vault_rotation`. Vault also rotates by itself every
`rotation_period`: a run that finds the record behind Vault brings it up to date ("record_synced"),
so the inventory's age follows Vault's.

The secret's KV path holds the rotation record, never the password:
{rotated_at, last_vault_rotation, role, username}.
"""

from contextlib import closing
from datetime import datetime

import hvac.exceptions
import psycopg2
import psycopg2.extensions
import requests

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.vault_kv import access_problem
from gsv_pipelines.lib.rotation.rotate import (
    Context,
    Outcome,
    RotationError,
    read_record,
    write_record,
)


def _refused(ctx: Context, exc: Exception, what: str, mount: str, role: str) -> RotationError:
    where = f"static role {role!r} of the database secrets engine at {mount}/"
    message = " ".join(str(exc).split())
    common = access_problem(exc, what, where)
    if common:
        return RotationError(f"{ctx.secret.name}: {ctx.journal.scrub(common)}")
    if isinstance(exc, hvac.exceptions.InvalidPath) and "no handler for route" in message:
        reason = f"no database secrets engine is mounted at {mount}/ (for {role!r})"
    # "unknown role: <name>" (static-creds), "no static role found for role name" (rotate-role).
    elif isinstance(exc, hvac.exceptions.InvalidRequest) and (
        "unknown role" in message or "no static role" in message
    ):
        reason = f"no static role {role!r} in the database secrets engine at {mount}/"
    else:
        reason = f"Vault refused to {what} {where}: {type(exc).__name__}: {message}"
    return RotationError(f"{ctx.secret.name}: {ctx.journal.scrub(reason)}")


def _verify_dsn(ctx: Context) -> str:
    """The policy's DSN, checked before anything changes: the login must be the role's own."""
    dsn = str(ctx.secret.settings["verify_dsn"])
    try:
        keywords = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        raise RotationError(
            f"{ctx.secret.name}: verify_dsn is not a libpq DSN (host=… port=… dbname=…)"
        ) from None
    if {"user", "password"} & set(keywords):
        raise RotationError(
            f"{ctx.secret.name}: verify_dsn must carry no user or password: the login verified "
            "is the static role's, with the password Vault returns"
        )
    return dsn


def _login(dsn: str, username: str, password: str) -> str:
    with (
        closing(
            psycopg2.connect(dsn, user=username, password=password, connect_timeout=10)
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("select current_user")
        return cur.fetchone()[0]


class StaticRoleRotator:
    def run(self, ctx: Context) -> Outcome:
        secret, journal = ctx.secret, ctx.journal
        role = str(secret.settings["role"])
        mount = str(secret.settings.get("database_mount", "database"))
        engine = ctx.client.secrets.database

        def vault(what: str, call):
            try:
                return call()
            except (requests.RequestException, hvac.exceptions.VaultError) as exc:
                raise _refused(ctx, exc, what, mount, role) from None

        dsn = _verify_dsn(ctx)
        record = read_record(ctx)
        creds = vault(
            "read", lambda: engine.get_static_credentials(role, mount_point=mount)["data"]
        )
        journal.protect(creds.get("password", ""))
        last = datetime.fromisoformat(creds["last_vault_rotation"])
        age = (ctx.now - last).total_seconds() / 86400
        journal.record(
            "read",
            role=role,
            username=creds["username"],
            last_vault_rotation=last.isoformat(),
            rotation_period_s=creds.get("rotation_period"),
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

        if not (ctx.force or age >= secret.max_age_days):
            outcome.reason = (
                f"Vault rotated it {age:.1f} days ago, rotated after {secret.max_age_days:g}"
            )
            if record is None or record.data.get("last_vault_rotation") != last.isoformat():
                # Vault rotated by itself (or no record yet): the record follows Vault.
                outcome.version_after = write_record(
                    ctx,
                    record,
                    {
                        "rotated_at": last.isoformat(),
                        "last_vault_rotation": last.isoformat(),
                        "role": role,
                        "username": creds["username"],
                    },
                )
                journal.record("record_synced", version=outcome.version_after)
                outcome.reason += "; rotation record brought up to date"
            return outcome

        vault("rotate", lambda: engine.rotate_static_role_credentials(role, mount_point=mount))
        try:
            new = vault(
                "read", lambda: engine.get_static_credentials(role, mount_point=mount)["data"]
            )
            password = journal.protect(new["password"])
            rotated = datetime.fromisoformat(new["last_vault_rotation"])
            if rotated <= last:
                raise RotationError(f"Vault still reports its rotation of {last.isoformat()}")
            journal.record("vault_rotated", last_vault_rotation=rotated.isoformat())
            try:
                user = _login(dsn, new["username"], password)
            except psycopg2.Error as exc:
                raise RotationError(
                    f"the new password does not log in as {new['username']!r} to {dsn!r}: "
                    f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                ) from None
            journal.record("login_verified", username=user, dsn=dsn)
            version = write_record(
                ctx,
                record,
                {
                    "rotated_at": ctx.now.isoformat(),
                    "last_vault_rotation": rotated.isoformat(),
                    "role": role,
                    "username": new["username"],
                },
            )
            journal.record("record_written", version=version)
        except Exception as exc:
            detail = (
                str(exc)
                if isinstance(exc, RotationError | vault_kv.KvError)
                else f"{type(exc).__name__}: {exc}"
            )
            raise RotationError(
                f"rotation of {secret.name} ({secret.kind}): Vault was asked to rotate static role "
                f"{role!r} at {mount}/ and the run failed after steps {journal.names}: "
                f"{journal.scrub(detail)}. Nothing was rolled back: Vault owns the password and "
                "keeps the one it set"
            ) from None
        outcome.action, outcome.reason, outcome.version_after = (
            "rotated",
            "forced" if ctx.force else f"older than {secret.max_age_days:g} days",
            version,
        )
        return outcome
