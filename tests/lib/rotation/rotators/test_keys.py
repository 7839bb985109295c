from datetime import UTC, datetime, timedelta

import hvac
import pytest

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.rotation.policy import SecretPolicy
from gsv_pipelines.lib.rotation.rotate import Journal, RotationError, rotate


@pytest.fixture
def client(openbao):
    return hvac.Client(url=openbao.addr, token=openbao.token)


def _policy(path: str, kind: str = "hmac_key", **settings) -> SecretPolicy:
    return SecretPolicy(
        name=path.replace("/", "-"),
        kind=kind,
        mount="secret",
        path=path,
        max_age_days=30,
        grace_hours=24,
        settings=settings,
    )


def test_a_due_key_is_rotated_the_previous_kept_then_retired(client):
    vault_kv.write(client, "secret", "t/hmac1", {"key": "original", "note": "kept"}, cas=0)
    policy = _policy("t/hmac1")
    now = datetime.now(UTC)
    assert rotate(client, policy, now=now).action == "nothing due"
    later = now + timedelta(days=31)
    rotated = rotate(client, policy, now=later)
    assert (rotated.action, rotated.version_before, rotated.version_after) == ("rotated", 1, 2)
    assert [s.name for s in rotated.steps] == ["read", "kv_written", "verified"]
    data = vault_kv.read(client, "secret", "t/hmac1").data
    assert data["previous_key"] == "original" and data["key"] != "original"
    assert len(data["key"]) == 64 and data["note"] == "kept"
    # Within the grace period: the previous key stays.
    assert rotate(client, policy, now=later + timedelta(hours=23)).action == "deferred"
    retired = rotate(client, policy, now=later + timedelta(hours=25))
    assert retired.action == "retired"
    data = vault_kv.read(client, "secret", "t/hmac1").data
    assert "previous_key" not in data and "previous_until" not in data
    # No value in the journal.
    assert "original" not in str(rotated.steps) and data["key"] not in str(rotated.steps)


def test_an_api_key_has_its_prefix_and_field(client):
    vault_kv.write(client, "secret", "t/api1", {"api_key": "old"}, cas=0)
    policy = _policy("t/api1", kind="api_key", prefix="gsv_", field="api_key")
    assert rotate(client, policy, force=True).action == "rotated"
    assert vault_kv.read(client, "secret", "t/api1").data["api_key"].startswith("gsv_")


def test_a_failure_after_the_write_rolls_back(client):
    vault_kv.write(client, "secret", "t/hmac2", {"key": "original"}, cas=0)
    journal = Journal(fail_after="kv_written")
    with pytest.raises(RotationError, match="failed after steps") as failure:
        rotate(client, _policy("t/hmac2"), force=True, journal=journal)
    assert journal.names == ["read", "kv_written", "kv_rolled_back"]
    current = vault_kv.read(client, "secret", "t/hmac2")
    assert current.data == {"key": "original"} and current.version == 3
    assert "original" not in str(failure.value)


def test_a_concurrent_write_is_never_overwritten(client, monkeypatch):
    vault_kv.write(client, "secret", "t/hmac3", {"key": "original"}, cas=0)
    read = vault_kv.read

    def read_then_someone_writes(*args, **kwargs):
        secret = read(*args, **kwargs)
        vault_kv.write(client, "secret", "t/hmac3", {"key": "theirs"}, cas=secret.version)
        return secret

    monkeypatch.setattr(vault_kv, "read", read_then_someone_writes)
    with pytest.raises(vault_kv.CasConflict, match="changed since version 1"):
        rotate(client, _policy("t/hmac3"), force=True)
    monkeypatch.undo()
    assert vault_kv.read(client, "secret", "t/hmac3").data == {"key": "theirs"}


def test_sealed_and_unreachable_vault_change_nothing(tmp_path):
    from gsv_pipelines.lib.core.openbao import start_dev_server
    from gsv_pipelines.lib.core.processes import free_port

    unreachable = hvac.Client(url=f"http://127.0.0.1:{free_port()}", token="t")
    with pytest.raises(vault_kv.KvError, match="Vault is unreachable"):
        rotate(unreachable, _policy("t/x"), force=True)
    server = start_dev_server(tmp_path)
    try:
        client = hvac.Client(url=server.addr, token=server.token)
        vault_kv.write(client, "secret", "t/sealed", {"key": "original"}, cas=0)
        client.sys.seal()
        with pytest.raises(vault_kv.KvError, match="sealed"):
            rotate(client, _policy("t/sealed"), force=True)
    finally:
        server.stop()


def test_a_missing_secret_is_named(client):
    with pytest.raises(vault_kv.SecretMissing, match="no secret at secret/t/absent"):
        rotate(client, _policy("t/absent"), force=True)
