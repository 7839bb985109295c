"""postgres_password: the A/B ("two login roles") rotation of a PostgreSQL password.

Two login roles own the same objects (typically members of one group role); consumers use
whichever Vault names. A rotation gives the *inactive* role a new password and LOGIN, checks it
can log in, then points Vault at it. The active role is never touched, so the credential Vault
returned before the rotation keeps working during the grace period; a later run retires it
(`NOLOGIN PASSWORD NULL`: open sessions go on, new logins fail).

KV data at the secret's path:
  {username: active role, password, active_role, previous_role?, previous_until?, rotated_at?,
   ...other keys (host, port, dbname) preserved}
A seeded secret may hold only username/password, with username = one of `roles`.

Settings: `roles` [A, B] and `admin_path`, a KV v2 path on the same mount whose data is an admin
connection {host, port, dbname, username, password}. The admin must be allowed to ALTER ROLE
both roles (superuser, or CREATEROLE; from PostgreSQL 16 also ADMIN OPTION on both). New
logins are verified against the admin's host and port, on the secret's `dbname` if it has one.

Rollback: a failure after the password was set and before Vault was written puts the inactive
role back to `NOLOGIN PASSWORD NULL`; a failure after the KV write also makes the previous KV data
current again (first, so Vault points at the untouched role before the other is disabled).

Known limitation: `ALTER ROLE ... PASSWORD '...'` reaches the server as text. A server logging
DDL (`log_statement=ddl` or `all`) writes it to its log, and so does `log_min_error_statement`
if the statement fails. Keep `password_encryption=scram-sha-256`, do not log DDL on this server;
sending a client-side SCRAM verifier instead of the password would avoid it (not done here).
"""

import secrets
from typing import Any

import psycopg2
from psycopg2 import sql

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.rotation.rotate import (
    Context,
    Journal,
    Outcome,
    RotationError,
    age_days,
    grace_over,
    rollback_kv,
)

ADMIN_KEYS = ("host", "port", "dbname", "username", "password")
PREVIOUS_KEYS = ("previous_role", "previous_until")
CONNECT_TIMEOUT = 10  # seconds


class Database:
    """Where the roles live, with the admin connection (autocommit: each ALTER ROLE is final)."""

    def __init__(self, admin: dict[str, Any], journal: Journal) -> None:
        self.host, self.port, self.dbname = admin["host"], int(admin["port"]), admin["dbname"]
        self.admin_user = admin["username"]
        self.journal = journal
        self.conn = self.login(self.admin_user, admin["password"], self.dbname, what="admin")
        self.conn.autocommit = True

    @property
    def where(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port}"

    def login(self, user: str, password: str, dbname: str, what: str = "login"):
        """A new connection (psycopg2 keyword arguments: the password is in no DSN string)."""
        try:
            return psycopg2.connect(
                host=self.host,
                port=self.port,
                dbname=dbname,
                user=user,
                password=password,
                connect_timeout=CONNECT_TIMEOUT,
            )
        except psycopg2.Error as exc:
            reason = self.journal.scrub(" ".join(str(exc).split()))
            raise RotationError(
                f"{what} as {user!r} to {self.where}/{dbname} failed: "
                f"{type(exc).__name__}: {reason}"
            ) from None

    def check_login(self, user: str, password: str, dbname: str) -> None:
        conn = self.login(user, password, dbname)
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
        finally:
            conn.close()

    def require_roles(self, roles: list[str]) -> None:
        with self.conn.cursor() as cur:
            cur.execute("select rolname from pg_roles where rolname = any(%s)", (roles,))
            found = {row[0] for row in cur.fetchall()}
        missing = [r for r in roles if r not in found]
        if missing:
            raise RotationError(
                f"role(s) {', '.join(map(repr, missing))} do not exist in {self.where}: "
                "create both A/B login roles first"
            )

    def alter(self, role: str, clause: str, *params: str) -> None:
        # `clause` is code from this module; the role is quoted as an identifier, values are
        # parameters.
        statement = sql.SQL("ALTER ROLE {} WITH " + clause).format(sql.Identifier(role))
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, params or None)
        except psycopg2.Error as exc:
            reason = self.journal.scrub(" ".join((exc.pgerror or str(exc)).split()))
            raise RotationError(
                f"{self.admin_user!r} could not alter role {role!r} in {self.where}: {reason}"
            ) from None

    def set_password(self, role: str, password: str) -> None:
        self.alter(role, "LOGIN PASSWORD %s", password)

    def disable(self, role: str) -> None:
        self.alter(role, "NOLOGIN PASSWORD NULL")

    def close(self) -> None:
        self.conn.close()


class PostgresPasswordRotator:
    def run(self, ctx: Context) -> Outcome:
        secret, journal = ctx.secret, ctx.journal
        roles = [str(r) for r in secret.settings["roles"]]
        current = vault_kv.read(ctx.client, secret.mount, secret.path)
        journal.record(
            "read", version=current.version, age_days=round(age_days(current, ctx.now), 3)
        )
        data = current.data
        where = f"{secret.mount}/{secret.path}"
        if not data.get("password") or not data.get("username"):
            raise RotationError(f"{where} needs username and password to rotate")
        journal.protect(data["password"])
        active = data.get("active_role") or data["username"]
        if active not in roles or data["username"] != active:
            raise RotationError(
                f"{where}: the active role {active!r} (username {data['username']!r}) "
                f"is not one of the roles {roles}"
            )
        outcome = Outcome(
            secret.name, secret.kind, "nothing due", "", version_before=current.version
        )

        previous = data.get("previous_role")
        if previous:
            if previous not in roles or previous == active:
                raise RotationError(f"{where}: previous_role {previous!r} is not the other role")
            if not data.get("previous_until"):
                raise RotationError(f"{where}: previous_role {previous!r} has no previous_until")
            if not grace_over(data, ctx.now):
                outcome.action = "deferred"
                outcome.reason = f"{previous} valid until {data.get('previous_until')}"
                return outcome
            db = self._database(ctx)
            try:
                db.require_roles(roles)
                db.disable(previous)
            finally:
                db.close()
            journal.record("role_retired", role=previous)
            kept = {k: v for k, v in data.items() if k not in PREVIOUS_KEYS}
            version = vault_kv.write(
                ctx.client, secret.mount, secret.path, kept, cas=current.version
            )
            journal.record("previous_retired", version=version)
            outcome.action = "retired"
            outcome.reason = f"grace period over: {previous} can no longer log in"
            outcome.version_after = version
            return outcome

        if not ctx.is_due(current):
            outcome.reason = (
                f"{age_days(current, ctx.now):.1f} days old, rotated after {secret.max_age_days:g}"
            )
            return outcome

        inactive = next(r for r in roles if r != active)
        db = self._database(ctx)
        try:
            db.require_roles(roles)
            version = self._rotate(ctx, db, current, active, inactive)
        finally:
            db.close()
        outcome.action = "rotated"
        outcome.reason = (
            "forced" if ctx.force else f"older than {secret.max_age_days:g} days"
        ) + f": {active} -> {inactive}"
        outcome.version_after = version
        return outcome

    def _database(self, ctx: Context) -> Database:
        secret = ctx.secret
        path = str(secret.settings["admin_path"])
        admin = vault_kv.read(ctx.client, secret.mount, path).data
        ctx.journal.protect(admin.get("password", ""))
        missing = [k for k in ADMIN_KEYS if not admin.get(k)]
        if missing:
            raise RotationError(
                f"admin connection at {secret.mount}/{path} lacks {', '.join(missing)}"
            )
        return Database(admin, ctx.journal)

    def _rotate(
        self,
        ctx: Context,
        db: Database,
        current: vault_kv.KvSecret,
        active: str,
        inactive: str,
    ) -> int:
        secret, journal = ctx.secret, ctx.journal
        dbname = current.data.get("dbname") or db.dbname
        new = journal.protect(secrets.token_urlsafe(32))
        password_set = False
        written: int | None = None
        try:
            db.set_password(inactive, new)
            password_set = True
            journal.record("db_password_set", role=inactive)
            db.check_login(inactive, new, dbname)
            journal.record("login_verified", role=inactive)
            data = {
                **{k: v for k, v in current.data.items() if k not in PREVIOUS_KEYS},
                "username": inactive,
                "password": new,
                "active_role": inactive,
                "previous_role": active,
                "previous_until": ctx.grace_end(),
                "rotated_at": ctx.now.isoformat(),
            }
            written = vault_kv.write(
                ctx.client, secret.mount, secret.path, data, cas=current.version
            )
            journal.record("kv_written", version=written, role=inactive)
            check = vault_kv.read(ctx.client, secret.mount, secret.path)
            if check.version != written or check.data.get("username") != inactive:
                raise RotationError(
                    f"{secret.mount}/{secret.path}: Vault does not return version {written} "
                    "as current"
                )
            db.check_login(check.data["username"], check.data.get("password", ""), dbname)
            journal.record("verified", version=written, role=inactive)
        except BaseException as exc:
            undone = self._roll_back(ctx, db, current, inactive, password_set, written)
            if isinstance(exc, RotationError) and undone:
                raise RotationError(f"{exc}; rolled back: {', '.join(undone)}") from None
            raise
        return written

    def _roll_back(
        self,
        ctx: Context,
        db: Database,
        current: vault_kv.KvSecret,
        inactive: str,
        password_set: bool,
        written: int | None,
    ) -> list[str]:
        undone = []
        if written is not None:
            try:
                rollback_kv(ctx, current, written)
            except vault_kv.KvError as exc:
                # Vault may now name `inactive` (ours or someone's newer write): disabling it
                # could lock consumers out, so it is left as it is.
                raise RotationError(
                    f"rotation of {ctx.secret.name} failed after steps {ctx.journal.names} "
                    f"and Vault could not be rolled back ({exc}); role {inactive!r} keeps its "
                    "new password and LOGIN: check the KV data before disabling it"
                ) from None
            undone.append(f"KV version {current.version} current again")
        if password_set:
            try:
                db.disable(inactive)
            except RotationError as exc:
                raise RotationError(
                    f"rotation of {ctx.secret.name} failed after steps {ctx.journal.names}; "
                    f"restoring role {inactive!r} failed too ({exc}): run "
                    f"ALTER ROLE {inactive} WITH NOLOGIN PASSWORD NULL"
                ) from None
            ctx.journal.record("db_restored", role=inactive)
            undone.append(f"{inactive} NOLOGIN again")
        return undone
