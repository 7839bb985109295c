import base64
import secrets
from contextlib import closing
from datetime import UTC, datetime, timedelta

import hvac
import hvac.exceptions
import psycopg2
import pytest

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.openbao import start_dev_server
from gsv_pipelines.lib.rotation.policy import SecretPolicy
from gsv_pipelines.lib.rotation.rotate import Journal, RotationError, rotate
from tests.services.postgres import start_postgres

RECORDS = "t/engines"


@pytest.fixture(scope="module")
def bao(openbao, tmp_path_factory):
    """An OpenBao of this module's own (after `openbao`: the same skip/fail rules), so its
    `database` and `transit` mounts at their default paths meet no other test's."""
    server = start_dev_server(tmp_path_factory.mktemp("openbao-engines"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(bao):
    return hvac.Client(url=bao.addr, token=bao.token)


@pytest.fixture(scope="module")
def kv_only(client, bao):
    """A client whose token may use the KV records but neither engine."""
    client.sys.create_or_update_policy(
        "kv-only", 'path "secret/*" { capabilities = ["create", "read", "update", "list"] }'
    )
    token = client.auth.token.create(policies=["kv-only"], ttl="1h")["auth"]["client_token"]
    return hvac.Client(url=bao.addr, token=token)


@pytest.fixture(scope="module")
def pg(postgres):
    """PostgreSQL checking passwords on TCP (the session's `postgres` trusts any: a wrong
    password would log in). After `postgres`: the same skip/fail rules."""
    server = start_postgres(auth="scram-sha-256", superuser_password=secrets.token_hex(16))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database(client, pg):
    """The database engine at its default mount, connected to `pg` as a CREATEROLE admin."""
    admin_password = secrets.token_hex(16)
    _sql(pg, "create role vault_admin login createrole password %s", admin_password)
    client.sys.enable_secrets_engine("database", path="database")
    client.secrets.database.configure(
        name="platform",
        plugin_name="postgresql-database-plugin",
        allowed_roles=["*"],
        connection_url=(
            "postgresql://{{username}}:{{password}}@127.0.0.1:"
            f"{pg.port}/postgres?sslmode=disable"
        ),
        username="vault_admin",
        password=admin_password,
    )
    return pg


@pytest.fixture(scope="module")
def transit(client):
    client.sys.enable_secrets_engine("transit", path="transit")
    return client.secrets.transit


def _sql(pg, statement: str, *params) -> None:
    with closing(pg.connect()) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(statement, params)


def _static_role(client, pg, name: str, statements: list[str] | None = None) -> None:
    """A login role with a password nobody knows, handed to Vault (which rotates it at once)."""
    _sql(pg, f'create role "{name}" login password %s', secrets.token_hex(16))
    client.secrets.database.create_static_role(
        name=name,
        db_name="platform",
        username=name,
        rotation_statements=statements or [],  # empty: the plugin's ALTER ROLE … PASSWORD
        rotation_period=86400,
    )


def _logs_in(pg, user: str, password: str) -> bool:
    try:
        psycopg2.connect(
            host="127.0.0.1", port=pg.port, dbname="postgres", user=user, password=password
        ).close()
    except psycopg2.OperationalError as exc:
        assert "password authentication failed" in str(exc)
        return False
    return True


def _creds(client, role: str) -> dict:
    return client.secrets.database.get_static_credentials(role)["data"]


def _policy(name: str, kind: str, **settings) -> SecretPolicy:
    return SecretPolicy(
        name=name,
        kind=kind,
        mount="secret",
        path=f"{RECORDS}/{name}",
        max_age_days=30,
        grace_hours=24,
        settings=settings,
    )


def _db_policy(pg, name: str, role: str, **settings) -> SecretPolicy:
    return _policy(
        name,
        "vault_database_static_role",
        role=role,
        verify_dsn=f"host=127.0.0.1 port={pg.port} dbname=postgres",
        **settings,
    )


def _record(client, name: str) -> vault_kv.KvSecret:
    return vault_kv.read(client, "secret", f"{RECORDS}/{name}")


def _names(outcome) -> list[str]:
    return [s.name for s in outcome.steps]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_vault_rotates_a_static_role_and_only_the_new_password_logs_in(client, database):
    _static_role(client, database, "registry_app")
    policy = _db_policy(database, "db-registry", "registry_app")
    now = datetime.now(UTC)
    # Vault rotated it when the role was created: not due, but the record is started.
    first = rotate(client, policy, now=now)
    assert (first.action, _names(first)) == ("nothing due", ["read", "record_synced"])
    old = _creds(client, "registry_app")
    assert _logs_in(database, "registry_app", old["password"])

    later = now + timedelta(days=31)
    rotated = rotate(client, policy, now=later)
    assert (rotated.action, rotated.version_before, rotated.version_after) == ("rotated", 1, 2)
    assert _names(rotated) == ["read", "vault_rotated", "login_verified", "record_written"]
    new = _creds(client, "registry_app")
    assert new["password"] != old["password"]
    assert not _logs_in(database, "registry_app", old["password"])
    assert _logs_in(database, "registry_app", new["password"])
    record = _record(client, "db-registry").data
    assert record == {
        "rotated_at": later.isoformat(),
        "last_vault_rotation": datetime.fromisoformat(new["last_vault_rotation"]).isoformat(),
        "role": "registry_app",
        "username": "registry_app",
    }
    for password in (old["password"], new["password"]):
        assert password not in str(rotated.steps) and password not in str(record)


def test_the_record_follows_vaults_own_rotations(client, database):
    _static_role(client, database, "search_app")
    policy = _db_policy(database, "db-search", "search_app")
    assert _names(rotate(client, policy)) == ["read", "record_synced"]
    assert _names(rotate(client, policy)) == ["read"]
    # Vault rotating on its own schedule: the next run records it, rotates nothing.
    client.secrets.database.rotate_static_role_credentials("search_app")
    stamp = datetime.fromisoformat(_creds(client, "search_app")["last_vault_rotation"])
    synced = rotate(client, policy)
    assert (synced.action, _names(synced)) == ("nothing due", ["read", "record_synced"])
    assert _record(client, "db-search").data["rotated_at"] == stamp.isoformat()
    assert rotate(client, policy, force=True).action == "rotated"


def test_a_new_password_that_does_not_log_in_fails_loudly(client, database):
    # Rotation statements that change nothing: Vault hands out a password PostgreSQL never got.
    _static_role(client, database, "broken_app", statements=["SELECT 1"])
    journal = Journal()
    with pytest.raises(RotationError) as failure:
        rotate(client, _db_policy(database, "db-broken", "broken_app"), force=True, journal=journal)
    assert journal.names == ["read", "vault_rotated"]
    message = str(failure.value)
    assert "does not log in as 'broken_app'" in message
    assert "password authentication failed" in message
    assert "Nothing was rolled back: Vault owns the password" in message
    assert _creds(client, "broken_app")["password"] not in message
    with pytest.raises(vault_kv.SecretMissing):
        _record(client, "db-broken")


def test_credentials_in_the_verify_dsn_are_refused_before_anything_changes(client, database):
    _static_role(client, database, "dsn_app")
    before = _creds(client, "dsn_app")["last_vault_rotation"]
    policy = _db_policy(database, "db-dsn", "dsn_app")
    policy.settings["verify_dsn"] += " password=hunter2"
    with pytest.raises(RotationError, match="verify_dsn must carry no user or password"):
        rotate(client, policy, force=True)
    assert _creds(client, "dsn_app")["last_vault_rotation"] == before


@pytest.mark.parametrize(
    ("settings", "forbidden", "message"),
    [
        ({"role": "nobody"}, False, "no static role 'nobody' in the database secrets engine at "),
        (
            {"role": "x", "database_mount": "nodb"},
            False,
            "no database secrets engine is mounted at nodb/",
        ),
        ({"role": "x"}, True, "the Vault token may not read static role 'x' .* denied"),
    ],
    ids=["missing role", "missing mount", "forbidden"],
)
def test_static_role_errors_are_clear(client, kv_only, database, settings, forbidden, message):
    role = settings.pop("role")
    policy = _db_policy(database, "db-errors", role, **settings)
    with pytest.raises(RotationError, match=message) as failure:
        rotate(kv_only if forbidden else client, policy, force=True)
    assert kv_only.token not in str(failure.value)
    with pytest.raises(vault_kv.SecretMissing):
        _record(client, "db-errors")


def test_a_transit_key_is_rotated_then_its_older_versions_retired(client, transit):
    transit.create_key("orders")
    old = transit.encrypt_data("orders", plaintext=_b64("order 1"))["data"]["ciphertext"]
    policy = _policy("transit-orders", "transit_key", key="orders")
    now = datetime.now(UTC)
    first = rotate(client, policy, now=now)
    assert (first.action, _names(first)) == ("nothing due", ["read", "record_synced"])
    assert _record(client, "transit-orders").data["key_version"] == 1

    later = now + timedelta(days=31)
    rotated = rotate(client, policy, now=later)
    assert rotated.action == "rotated"
    assert _names(rotated) == ["read", "key_rotated", "verified", "record_written"]
    key = transit.read_key("orders")["data"]
    assert (key["latest_version"], key["min_decryption_version"]) == (2, 1)
    assert transit.decrypt_data("orders", ciphertext=old)["data"]["plaintext"] == _b64("order 1")
    record = _record(client, "transit-orders").data
    assert record == {
        "rotated_at": later.isoformat(),
        "key_version": 2,
        "previous_version": 1,
        "raise_min_decryption_after": (later + timedelta(hours=24)).isoformat(),
    }
    assert "vault:v" not in str(rotated.steps)

    deferred = rotate(client, policy, now=later + timedelta(hours=23))
    assert (deferred.action, _names(deferred)) == ("deferred", ["read"])
    assert transit.read_key("orders")["data"]["min_decryption_version"] == 1

    retired = rotate(client, policy, now=later + timedelta(hours=25))
    assert retired.action == "retired"
    assert _names(retired) == ["read", "min_decryption_raised", "record_written"]
    assert transit.read_key("orders")["data"]["min_decryption_version"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest, match="too old"):
        transit.decrypt_data("orders", ciphertext=old)
    new = transit.encrypt_data("orders", plaintext=_b64("order 2"))["data"]["ciphertext"]
    assert transit.decrypt_data("orders", ciphertext=new)["data"]["plaintext"] == _b64("order 2")
    record = _record(client, "transit-orders").data
    assert "raise_min_decryption_after" not in record and record["key_version"] == 2
    # Then nothing until version 2 is due.
    quiet = rotate(client, policy, now=later + timedelta(days=2))
    assert (quiet.action, _names(quiet)) == ("nothing due", ["read"])


def test_a_derived_transit_key_is_verified_with_a_context(client, transit):
    transit.create_key("tenants", derived=True)
    outcome = rotate(client, _policy("transit-tenants", "transit_key", key="tenants"), force=True)
    assert outcome.action == "rotated" and "verified" in _names(outcome)


def test_a_failure_after_the_transit_rotation_says_the_version_exists(client, transit):
    transit.create_key("invoices")
    journal = Journal(fail_after="key_rotated")
    policy = _policy("transit-invoices", "transit_key", key="invoices")
    with pytest.raises(RotationError) as failure:
        rotate(client, policy, force=True, journal=journal)
    message = str(failure.value)
    assert "Vault cannot un-rotate a transit key" in message
    assert "the new version (2) exists, encrypts from now on, and is UNVERIFIED" in message
    assert "min_decryption_version was left at 1" in message
    key = transit.read_key("invoices")["data"]
    assert (key["latest_version"], key["min_decryption_version"]) == (2, 1)
    with pytest.raises(vault_kv.SecretMissing):
        _record(client, "transit-invoices")


def test_a_transit_key_that_cannot_encrypt_is_not_rotated(client, transit):
    transit.create_key("signing", key_type="ed25519")
    with pytest.raises(RotationError, match="ed25519 key, which does not encrypt"):
        rotate(client, _policy("transit-signing", "transit_key", key="signing"), force=True)
    assert transit.read_key("signing")["data"]["latest_version"] == 1


@pytest.mark.parametrize(
    ("settings", "forbidden", "message"),
    [
        ({"key": "nothing"}, False, "no transit key 'nothing' at transit/"),
        (
            {"key": "x", "transit_mount": "notransit"},
            False,
            "no transit secrets engine is mounted at notransit/",
        ),
        ({"key": "x"}, True, "the Vault token may not read transit key 'x' .* denied"),
    ],
    ids=["missing key", "missing mount", "forbidden"],
)
def test_transit_errors_are_clear(client, kv_only, transit, settings, forbidden, message):
    policy = _policy("transit-errors", "transit_key", **settings)
    with pytest.raises(RotationError, match=message) as failure:
        rotate(kv_only if forbidden else client, policy, force=True)
    assert kv_only.token not in str(failure.value)
    with pytest.raises(vault_kv.SecretMissing):
        _record(client, "transit-errors")
