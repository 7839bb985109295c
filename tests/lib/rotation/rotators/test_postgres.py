"""The A/B rotation of a PostgreSQL password, against real OpenBao and a real PostgreSQL cluster
that checks passwords (scram-sha-256 on TCP: the session's `postgres` fixture trusts everyone)."""

import contextlib
import dataclasses
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import hvac
import psycopg2
import pytest

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.processes import ServiceError, free_port
from gsv_pipelines.lib.rotation.policy import SecretPolicy
from gsv_pipelines.lib.rotation.rotate import Journal, RotationError, rotate
from tests.services.postgres import Postgres, start_postgres

ADMIN = "rotator_admin"
ADMIN_PASSWORD = secrets.token_urlsafe(16)
ADMIN_PATH = "t/pg/admin"
STEPS = ["read", "db_password_set", "login_verified", "kv_written", "verified"]


@pytest.fixture(scope="module")
def pg():
    try:
        server = start_postgres(auth="scram-sha-256", superuser_password=secrets.token_urlsafe(16))
    except ServiceError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL 15 could not start, and CI requires it: {exc}")
        pytest.skip(f"PostgreSQL 15 unavailable here: {exc}")
    # Least privilege: CREATEROLE is enough to ALTER ROLE the A/B roles (PostgreSQL 15).
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD %s", (ADMIN_PASSWORD,))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(openbao, pg):
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    admin = {
        "host": "127.0.0.1",
        "port": pg.port,
        "dbname": "postgres",
        "username": ADMIN,
        "password": ADMIN_PASSWORD,
    }
    vault_kv.write(client, "secret", ADMIN_PATH, admin, cas=0)
    return client


@dataclass
class Seeded:
    path: str
    a: str
    b: str
    password_a: str
    policy: SecretPolicy


def _seed(pg: Postgres, client: hvac.Client, name: str, admin_path: str = ADMIN_PATH) -> Seeded:
    """Role A logs in with a known password, B is NOLOGIN; Vault names A."""
    a, b, password = f"{name}_a", f"{name}_b", secrets.token_urlsafe(16)
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {a} LOGIN PASSWORD %s", (password,))
        cur.execute(f"CREATE ROLE {b} NOLOGIN")
    path = f"t/pg/{name}"
    data = {"username": a, "password": password, "host": "127.0.0.1", "port": pg.port}
    vault_kv.write(client, "secret", path, {**data, "dbname": "postgres"}, cas=0)
    policy = SecretPolicy(
        name=name.replace("_", "-"),
        kind="postgres_password",
        mount="secret",
        path=path,
        max_age_days=30,
        grace_hours=24,
        settings={"roles": [a, b], "admin_path": admin_path},
    )
    return Seeded(path, a, b, password, policy)


def _can_login(pg: Postgres, user: str, password: str) -> bool:
    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=pg.port,
            dbname="postgres",
            user=user,
            password=password,
            connect_timeout=5,
        )
    except psycopg2.OperationalError:
        return False
    with conn, conn.cursor() as cur:
        cur.execute("select 1")
    conn.close()
    return True


def _vault_login(pg: Postgres, client: hvac.Client, path: str) -> bool:
    data = vault_kv.read(client, "secret", path).data
    return _can_login(pg, data["username"], data["password"])


def _login_state(pg: Postgres, role: str) -> tuple[bool, bool]:
    """(may log in, has a password), from pg_authid (superuser only)."""
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "select rolcanlogin, rolpassword is not null from pg_authid where rolname = %s",
            (role,),
        )
        return cur.fetchone()


def _assert_nothing_leaks(client, path: str, journals: list[Journal], texts: list[str]) -> None:
    """No password read, generated or ever stored at `path` is in a journal step or a message."""
    values = set().union(*(j.secrets for j in journals)) | {ADMIN_PASSWORD}
    for version in range(1, vault_kv.read(client, "secret", path).version + 1):
        # Versions beyond the mount's max_versions are gone; the journals hold their passwords.
        with contextlib.suppress(vault_kv.SecretMissing):
            values.add(vault_kv.read(client, "secret", path, version=version).data["password"])
    written = [str(j.steps) for j in journals] + texts
    assert not [v for v in values if any(v in text for text in written)]


def test_rotate_defer_retire_and_flip_back(pg, client):
    seeded = _seed(pg, client, "cycle")
    now = datetime.now(UTC)
    journals = [Journal() for _ in range(5)]
    assert rotate(client, seeded.policy, now=now, journal=journals[0]).action == "nothing due"

    later = now + timedelta(days=31)
    rotated = rotate(client, seeded.policy, now=later, journal=journals[1])
    assert (rotated.action, rotated.version_before, rotated.version_after) == ("rotated", 1, 2)
    assert [s.name for s in rotated.steps] == STEPS
    data = vault_kv.read(client, "secret", seeded.path).data
    assert data["username"] == data["active_role"] == seeded.b
    assert data["previous_role"] == seeded.a
    assert data["previous_until"] == (later + timedelta(hours=24)).isoformat()
    assert (data["host"], data["port"], data["dbname"]) == ("127.0.0.1", pg.port, "postgres")
    assert data["password"] != seeded.password_a
    assert _can_login(pg, seeded.b, data["password"])
    # The old credential keeps working during the grace period.
    assert _can_login(pg, seeded.a, seeded.password_a)

    inside = rotate(client, seeded.policy, now=later + timedelta(hours=23), journal=journals[2])
    assert inside.action == "deferred"
    assert _can_login(pg, seeded.a, seeded.password_a)

    retired = rotate(client, seeded.policy, now=later + timedelta(hours=25), journal=journals[3])
    assert retired.action == "retired"
    assert [s.name for s in retired.steps] == ["read", "role_retired", "previous_retired"]
    assert not _can_login(pg, seeded.a, seeded.password_a)
    assert _login_state(pg, seeded.a) == (False, False)
    data = vault_kv.read(client, "secret", seeded.path).data
    assert not {"previous_role", "previous_until"} & set(data)
    assert _vault_login(pg, client, seeded.path)

    back = rotate(client, seeded.policy, now=later + timedelta(days=31), journal=journals[4])
    assert back.action == "rotated"
    data = vault_kv.read(client, "secret", seeded.path).data
    assert (data["username"], data["previous_role"]) == (seeded.a, seeded.b)
    assert _vault_login(pg, client, seeded.path)
    assert not _can_login(pg, seeded.a, seeded.password_a)
    _assert_nothing_leaks(client, seeded.path, journals, [])


def test_logins_never_fail_while_rotating_and_retiring(pg, client, openbao):
    seeded = _seed(pg, client, "zero")
    attempts, failures = [], []

    def consumer() -> None:
        reader = hvac.Client(url=openbao.addr, token=openbao.token)
        for _ in range(200):
            attempts.append(1)
            try:
                response = reader.secrets.kv.v2.read_secret_version(
                    path=seeded.path, mount_point="secret", raise_on_deleted_version=True
                )
                data = response["data"]["data"]
                conn = psycopg2.connect(
                    host=data["host"],
                    port=data["port"],
                    dbname=data["dbname"],
                    user=data["username"],
                    password=data["password"],
                    connect_timeout=5,
                )
                with conn.cursor() as cur:
                    cur.execute("select 1")
                conn.close()
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)

    thread = threading.Thread(target=consumer)
    thread.start()
    journals, when, cycles = [], datetime.now(UTC), 0
    while thread.is_alive() and cycles < 100:
        when += timedelta(days=31)
        journals += [Journal(), Journal()]
        assert rotate(client, seeded.policy, now=when, journal=journals[-2]).action == "rotated"
        # The grace period, in which consumers pick up the new credential: short in real time,
        # a day for the rotator (`now`).
        time.sleep(0.2)
        retire = rotate(client, seeded.policy, now=when + timedelta(hours=25), journal=journals[-1])
        assert retire.action == "retired"
        cycles += 1
    thread.join()

    assert (len(attempts), failures) == (200, [])
    assert cycles >= 3, cycles
    print(f"{cycles} rotations and retirements during 200 logins")
    _assert_nothing_leaks(client, seeded.path, journals, failures)


@pytest.mark.parametrize(
    ("fail_after", "steps"),
    [
        ("db_password_set", ["read", "db_password_set", "db_restored"]),
        ("kv_written", [*STEPS[:4], "kv_rolled_back", "db_restored"]),
    ],
)
def test_a_failure_rolls_back_the_database_and_vault(pg, client, fail_after, steps):
    seeded = _seed(pg, client, f"fail_{fail_after}")
    before = vault_kv.read(client, "secret", seeded.path)
    journal = Journal(fail_after=fail_after)
    with pytest.raises(RotationError, match="failed after steps") as failure:
        rotate(client, seeded.policy, force=True, journal=journal)
    assert journal.names == steps

    assert vault_kv.read(client, "secret", seeded.path).data == before.data
    assert _vault_login(pg, client, seeded.path)
    generated = journal.secrets - {seeded.password_a, ADMIN_PASSWORD}
    assert len(generated) == 1
    assert not _can_login(pg, seeded.b, generated.pop())
    assert _login_state(pg, seeded.b) == (False, False)
    _assert_nothing_leaks(client, seeded.path, [journal], [str(failure.value)])

    # Nothing half-done is left: the next rotation goes through.
    assert rotate(client, seeded.policy, force=True).action == "rotated"
    assert _vault_login(pg, client, seeded.path)


def test_a_concurrent_write_is_kept_and_the_role_restored(pg, client, monkeypatch):
    seeded = _seed(pg, client, "cas")
    theirs = {"username": seeded.a, "password": seeded.password_a, "note": "theirs"}
    read = vault_kv.read

    def read_then_someone_writes(client_, mount, path, *args, **kwargs):
        secret = read(client_, mount, path, *args, **kwargs)
        if path == seeded.path and secret.version == 1:
            vault_kv.write(client, "secret", seeded.path, theirs, cas=secret.version)
        return secret

    monkeypatch.setattr(vault_kv, "read", read_then_someone_writes)
    journal = Journal()
    with pytest.raises(vault_kv.CasConflict, match="changed since version 1") as failure:
        rotate(client, seeded.policy, force=True, journal=journal)
    monkeypatch.undo()

    assert journal.names == ["read", "db_password_set", "login_verified", "db_restored"]
    current = vault_kv.read(client, "secret", seeded.path)
    assert (current.version, current.data) == (2, theirs)
    assert _login_state(pg, seeded.b) == (False, False)
    assert _can_login(pg, seeded.a, seeded.password_a)
    _assert_nothing_leaks(client, seeded.path, [journal], [str(failure.value)])


def test_bad_admin_credentials_and_an_unreachable_server_are_named(pg, client):
    wrong = secrets.token_urlsafe(16)
    admin = {"host": "127.0.0.1", "dbname": "postgres", "username": ADMIN}
    vault_kv.write(
        client, "secret", "t/pg/admin-wrong", {**admin, "port": pg.port, "password": wrong}, cas=0
    )
    closed = free_port()
    vault_kv.write(
        client,
        "secret",
        "t/pg/admin-closed",
        {**admin, "port": closed, "password": ADMIN_PASSWORD},
        cas=0,
    )
    for admin_path, port, reason in [
        ("t/pg/admin-wrong", pg.port, "password authentication failed"),
        ("t/pg/admin-closed", closed, "Connection refused"),
    ]:
        seeded = _seed(pg, client, admin_path.rpartition("-")[2], admin_path=admin_path)
        journal = Journal()
        with pytest.raises(RotationError) as failure:
            rotate(client, seeded.policy, force=True, journal=journal)
        message = str(failure.value)
        assert f"admin as '{ADMIN}' to PostgreSQL at 127.0.0.1:{port}/postgres failed" in message
        assert reason in message
        assert wrong not in message and ADMIN_PASSWORD not in message
        assert vault_kv.read(client, "secret", seeded.path).version == 1
        assert _can_login(pg, seeded.a, seeded.password_a)


def test_a_missing_role_is_named(pg, client):
    seeded = _seed(pg, client, "missing")
    settings = {"roles": [seeded.a, "nobody_b"], "admin_path": ADMIN_PATH}
    policy = dataclasses.replace(seeded.policy, settings=settings)
    with pytest.raises(RotationError, match="role\\(s\\) 'nobody_b' do not exist in PostgreSQL"):
        rotate(client, policy, force=True)
    assert vault_kv.read(client, "secret", seeded.path).version == 1
