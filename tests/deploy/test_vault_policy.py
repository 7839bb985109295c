"""deploy/vault/gsv-pipelines.hcl on a real OpenBao: what the pipelines' token can and cannot do.

The token is created with the policy ONLY (`no_default_policy=True`). Vault's `default` policy,
attached to every token unless told not to, grants lookup-self, renew-self, revoke-self, the
cubbyhole and response wrapping; operators may edit it, and the README recommends roles with
`token_no_default_policy`. Testing without it proves this policy alone is enough for the
pipelines and that every refusal below comes from it.

"Permitted" is asserted carefully: Vault checks the ACL before the request reaches the engine,
so a permitted call on an object that does not exist answers 400/404 from the engine, while a
refused call answers 403 "permission denied" whatever exists. Each permitted-but-absent case is
paired with a refused sibling on the same mount, which shows the mount answers 403 when it should.
"""

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests

from gsv_pipelines.lib.backups.vault_snapshot import check_archive, take_snapshot, write_sentinel
from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.store import ArtefactStore

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "gsv-pipelines.hcl"
POLICY = "gsv-pipelines"

# Every rule of the policy, and nothing else: a broader policy must change this test too.
EXPECTED_RULES = {
    "secret/data/gsv/*": {"read", "create", "update"},
    "secret/metadata/gsv/*": {"read", "list"},
    "database/rotate-role/*": {"update"},
    "database/static-creds/*": {"read"},
    "database/static-roles/*": {"read"},
    "transit/keys/+/rotate": {"update"},
    "transit/keys/+/config": {"update"},
    "transit/keys/*": {"read"},
    "transit/encrypt/*": {"update"},
    "transit/decrypt/*": {"update"},
    "sys/storage/raft/snapshot": {"read"},
    "secret/data/gsv-dr/sentinel": {"create", "update"},
    "auth/token/lookup-self": {"read"},
    "auth/token/renew-self": {"update"},
}


@dataclass
class Bao:
    addr: str
    root: hvac.Client
    token: str  # holds the gsv-pipelines policy only
    run: str  # unique per module run: the session's server is shared with other tests
    transit_key: str

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.token)

    def call(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return requests.request(
            method,
            f"{self.addr}/v1/{path}",
            headers={"X-Vault-Token": self.token},
            json=body,
            timeout=10,
        )


def install_policy(root: hvac.Client) -> str:
    """Write the policy; return a renewable token that holds it and nothing else."""
    root.sys.create_or_update_policy(name=POLICY, policy=POLICY_FILE.read_text())
    created = root.auth.token.create(policies=[POLICY], no_default_policy=True, ttl="15m")
    return created["auth"]["client_token"]


def _said(response: requests.Response) -> str:
    request = response.request
    return f"{request.method} {request.url} -> {response.status_code} {response.text.strip()}"


def assert_forbidden(response: requests.Response) -> None:
    assert response.status_code == 403 and "permission denied" in response.text, _said(response)


def assert_permitted(response: requests.Response, *statuses: int) -> None:
    """Past the ACL: the engine answered, with one of `statuses`."""
    assert "permission denied" not in response.text, _said(response)
    assert response.status_code in statuses, _said(response)


@pytest.fixture(scope="module")
def bao(openbao) -> Iterator[Bao]:
    """The session's dev server with transit and database mounted; left as it was found."""
    root = hvac.Client(url=openbao.addr, token=openbao.token)
    mounted = root.sys.list_mounted_secrets_engines()["data"]
    enabled = [engine for engine in ("transit", "database") if f"{engine}/" not in mounted]
    for engine in enabled:
        root.sys.enable_secrets_engine(engine, path=engine)
    run = uuid.uuid4().hex[:8]
    transit_key = f"gsv-policy-{run}"
    root.secrets.transit.create_key(transit_key)
    bao = Bao(openbao.addr, root, install_policy(root), run, transit_key)
    yield bao
    root.auth.token.revoke(bao.token)
    for path in (f"gsv/policy-test/{run}/api-key", f"gsv/policy-test/{run}/kept", f"other-{run}"):
        root.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")
    if "transit" not in enabled:
        root.secrets.transit.update_key_configuration(transit_key, deletion_allowed=True)
        root.secrets.transit.delete_key(transit_key)
    for engine in enabled:
        root.sys.disable_secrets_engine(engine)


def test_the_policy_has_exactly_the_expected_rules_and_the_token_only_it(bao):
    text = POLICY_FILE.read_text()
    rules = {
        path: set(re.findall(r'"(\w+)"', capabilities))
        for path, capabilities in re.findall(
            r'^path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', text, flags=re.MULTILINE
        )
    }
    assert rules == EXPECTED_RULES
    assert len(re.findall(r"^path ", text, flags=re.MULTILINE)) == len(EXPECTED_RULES)
    assert "delete" not in rules["secret/data/gsv/*"] | rules["secret/metadata/gsv/*"]
    # Vault stored what we wrote, and the token carries nothing else.
    assert bao.root.sys.read_policy(POLICY)["data"]["rules"] == text
    assert bao.client().auth.token.lookup_self()["data"]["policies"] == [POLICY]


def test_its_own_token_can_be_looked_up_and_renewed(bao):
    client = bao.client()
    assert client.is_authenticated()
    renewed = client.auth.token.renew_self(increment="10m")
    assert renewed["auth"]["client_token"] == bao.token
    assert_forbidden(bao.call("POST", "auth/token/lookup", {"token": bao.root.token}))


def test_kv_under_gsv_is_read_and_written_with_check_and_set(bao):
    client = bao.client()
    path = f"gsv/policy-test/{bao.run}/api-key"
    assert vault_kv.write(client, "secret", path, {"key": "v1"}, cas=0) == 1
    # A stale check-and-set is refused by KV itself (400), not by the policy.
    with pytest.raises(vault_kv.CasConflict):
        vault_kv.write(client, "secret", path, {"key": "lost"}, cas=0)
    assert vault_kv.write(client, "secret", path, {"key": "v2"}, cas=1) == 2
    current = vault_kv.read(client, "secret", path)
    assert (current.version, current.data) == (2, {"key": "v2"})
    assert vault_kv.read(client, "secret", path, version=1).data == {"key": "v1"}
    metadata = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
    assert metadata["data"]["current_version"] == 2
    listed = client.secrets.kv.v2.list_secrets(
        path=f"gsv/policy-test/{bao.run}", mount_point="secret"
    )
    assert listed["data"]["keys"] == ["api-key"]


def test_kv_outside_gsv_and_every_way_to_lose_history_are_forbidden(bao):
    path = f"gsv/policy-test/{bao.run}/kept"
    vault_kv.write(bao.client(), "secret", path, {"key": "v1"}, cas=0)
    vault_kv.write(bao.client(), "secret", path, {"key": "v2"}, cas=1)
    bao.root.secrets.kv.v2.create_or_update_secret(
        path=f"other-{bao.run}", secret={"key": "x"}, mount_point="secret"
    )
    refused = [
        ("GET", f"secret/data/other-{bao.run}", None),
        ("POST", f"secret/data/other-{bao.run}", {"data": {"key": "y"}}),
        ("GET", f"secret/metadata/other-{bao.run}", None),
        ("LIST", "secret/metadata/", None),
        ("DELETE", f"secret/data/{path}", None),
        ("POST", f"secret/delete/{path}", {"versions": [1]}),
        ("POST", f"secret/destroy/{path}", {"versions": [1]}),
        ("POST", f"secret/undelete/{path}", {"versions": [1]}),
        ("DELETE", f"secret/metadata/{path}", None),
        # Lowering max_versions would purge old versions: metadata is read-only.
        ("POST", f"secret/metadata/{path}", {"max_versions": 1}),
        ("GET", "secret/config", None),
    ]
    for method, where, body in refused:
        assert_forbidden(bao.call(method, where, body))
    # And nothing was lost: both versions are live and readable.
    versions = bao.root.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
    assert {
        number: (v["deletion_time"], v["destroyed"])
        for number, v in versions["data"]["versions"].items()
    } == {"1": ("", False), "2": ("", False)}


def test_transit_keys_are_rotated_retired_and_probed(bao):
    client = bao.client()
    transit = client.secrets.transit
    assert transit.read_key(bao.transit_key)["data"]["latest_version"] == 1
    transit.rotate_key(bao.transit_key)
    assert transit.read_key(bao.transit_key)["data"]["latest_version"] == 2
    # The probe: encrypt with the new version, decrypt it back.
    plaintext = "Z3N2LXByb2Jl"  # base64 of "gsv-probe"
    ciphertext = transit.encrypt_data(bao.transit_key, plaintext)["data"]["ciphertext"]
    assert ciphertext.startswith("vault:v2:")
    assert transit.decrypt_data(bao.transit_key, ciphertext)["data"]["plaintext"] == plaintext
    # Retire version 1 once the grace period is over.
    transit.update_key_configuration(bao.transit_key, min_decryption_version=2)
    assert transit.read_key(bao.transit_key)["data"]["min_decryption_version"] == 2


def test_transit_keys_cannot_be_created_deleted_weakened_or_exported(bao):
    key = bao.transit_key
    refused = [
        ("POST", f"transit/keys/new-{bao.run}", {}),
        ("DELETE", f"transit/keys/{key}", None),
        ("LIST", "transit/keys", None),
        ("POST", f"transit/keys/{key}/trim", {"min_available_version": 1}),
        # config takes the two retirement settings only.
        ("POST", f"transit/keys/{key}/config", {"exportable": True}),
        ("POST", f"transit/keys/{key}/config", {"deletion_allowed": True}),
        ("POST", f"transit/keys/{key}/config", {"allow_plaintext_backup": True}),
        ("GET", f"transit/export/encryption-key/{key}", None),
        ("GET", f"transit/backup/{key}", None),
        ("POST", f"transit/restore/{key}", {"backup": "x"}),
    ]
    for method, where, body in refused:
        assert_forbidden(bao.call(method, where, body))
    settings = bao.root.secrets.transit.read_key(key)["data"]
    assert not settings["exportable"] and not settings["deletion_allowed"]


def test_database_static_roles_are_permitted_and_nothing_else_on_the_mount(bao):
    role = f"absent-{bao.run}"
    # No such role on the mount: the engine (not the ACL) answers.
    assert_permitted(bao.call("POST", f"database/rotate-role/{role}"), 400)
    assert_permitted(bao.call("GET", f"database/static-creds/{role}"), 400)
    assert_permitted(bao.call("GET", f"database/static-roles/{role}"), 404)
    # The same mount refuses everything else.
    refused = [
        ("GET", f"database/creds/{role}", None),
        ("GET", f"database/config/{role}", None),
        ("LIST", "database/config", None),
        ("POST", f"database/config/{role}", {"plugin_name": "postgresql-database-plugin"}),
        ("POST", f"database/rotate-root/{role}", {}),
        ("POST", f"database/static-roles/{role}", {"db_name": "x", "username": "x"}),
        ("DELETE", f"database/static-roles/{role}", None),
        ("LIST", "database/static-roles", None),
        ("POST", f"database/roles/{role}", {"db_name": "x"}),
    ]
    for method, where, body in refused:
        assert_forbidden(bao.call(method, where, body))


def test_system_and_token_administration_is_forbidden(bao):
    refused = [
        ("LIST", "sys/policies/acl", None),
        ("GET", f"sys/policies/acl/{POLICY}", None),
        ("PUT", f"sys/policies/acl/{POLICY}", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
        ("PUT", f"sys/policy/evil-{bao.run}", {"policy": 'path "*" { capabilities = ["read"] }'}),
        ("POST", f"sys/mounts/evil-{bao.run}", {"type": "kv"}),
        ("GET", "sys/mounts", None),
        ("POST", f"sys/auth/evil-{bao.run}", {"type": "userpass"}),
        ("LIST", "auth/token/accessors", None),
        ("POST", "auth/token/create", {}),
        ("POST", "auth/token/create-orphan", {}),
        ("POST", "auth/token/revoke-accessor", {"accessor": "x"}),
        ("GET", "sys/raw/core", None),
        ("POST", "sys/storage/raft/snapshot", None),
        ("POST", "sys/storage/raft/snapshot-force", None),
        ("PUT", "cubbyhole/note", {"x": "y"}),
    ]
    for method, where, body in refused:
        assert_forbidden(bao.call(method, where, body))
    # The dev server stores in memory: the snapshot read passes the ACL, then finds no raft.
    assert_permitted(bao.call("GET", "sys/storage/raft/snapshot"), 404)
    assert POLICY in bao.root.sys.list_acl_policies()["data"]["keys"]
    assert f"evil-{bao.run}/" not in bao.root.sys.list_mounted_secrets_engines()["data"]


def test_a_raft_snapshot_is_taken_but_cannot_be_restored(openbao_raft, tmp_path):
    root = hvac.Client(url=openbao_raft.addr, token=openbao_raft.token)
    client = hvac.Client(url=openbao_raft.addr, token=install_policy(root))
    store = ArtefactStore(str(tmp_path))
    stored = take_snapshot(client, store, "vault/raft.snap")
    assert check_archive(store, stored.key)["Index"] > 0
    with store.open(stored.key) as snapshot:
        restore = requests.post(
            f"{openbao_raft.addr}/v1/sys/storage/raft/snapshot",
            headers={"X-Vault-Token": client.token},
            data=snapshot.read(),
            timeout=30,
        )
    assert_forbidden(restore)


def test_the_dr_sentinel_is_written_before_a_snapshot_and_nothing_beside_it(openbao_raft):
    root = hvac.Client(url=openbao_raft.addr, token=openbao_raft.token)
    client = hvac.Client(url=openbao_raft.addr, token=install_policy(root))
    written = write_sentinel(client)
    assert "error" not in written and written["version"] >= 1
    assert (
        root.secrets.kv.v2.read_secret_version(
            path="gsv-dr/sentinel", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["nonce"]
        == written["nonce"]
    )
    headers = {"X-Vault-Token": client.token}
    for method, where in [
        ("GET", "secret/data/gsv-dr/sentinel"),
        ("POST", "secret/data/gsv-dr/other"),
        ("DELETE", "secret/metadata/gsv-dr/sentinel"),
    ]:
        body = {"data": {"x": "y"}} if method == "POST" else None
        response = requests.request(
            method, f"{openbao_raft.addr}/v1/{where}", headers=headers, json=body, timeout=10
        )
        assert_forbidden(response)
