import pytest

from gsv_pipelines.lib.core.openbao import start_dev_server
from gsv_pipelines.lib.core.processes import free_port
from gsv_pipelines.resources.vault import VaultError, VaultResource


def test_token_login(openbao):
    client = VaultResource(addr=openbao.addr, token=openbao.token).client()
    assert client.is_authenticated()


def test_approle_login(openbao):
    root = VaultResource(addr=openbao.addr, token=openbao.token).client()
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("gsv-test", token_policies=["default"])
    role_id = root.auth.approle.read_role_id("gsv-test")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("gsv-test")["data"]["secret_id"]
    client = VaultResource(addr=openbao.addr, role_id=role_id, secret_id=secret_id).client()
    assert client.is_authenticated()
    assert client.token != openbao.token


def test_refused_token_is_a_clear_error_without_the_token(openbao):
    with pytest.raises(VaultError, match="refused") as failure:
        VaultResource(addr=openbao.addr, token="not-a-real-token-4711").client()
    assert "4711" not in str(failure.value)


def test_unreachable_server():
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(VaultError, match=f"Vault at {addr} is unreachable"):
        VaultResource(addr=addr, token="t").client()


def test_no_credentials(openbao):
    with pytest.raises(VaultError, match="no Vault credentials: set VAULT_TOKEN"):
        VaultResource(addr=openbao.addr).client()


def test_sealed_server(tmp_path):
    server = start_dev_server(tmp_path)
    try:
        VaultResource(addr=server.addr, token=server.token).client().sys.seal()
        with pytest.raises(VaultError, match="is sealed: unseal it"):
            VaultResource(addr=server.addr, token=server.token).client()
    finally:
        server.stop()
