import re
from pathlib import Path

import pytest

from gsv_pipelines.lib.rotation.policy import RotationPolicyError, load_rotation_policy

POLICIES = Path(__file__).resolve().parents[3] / "gsv_pipelines" / "policies"


def test_the_shipped_policies_load():
    shipped = load_rotation_policy()
    assert shipped.names == [
        "agent-registry-db",
        "webhook-hmac",
        "api-signing",
        "qdrant-api-key",
        "keycloak-client",
    ]
    db = shipped.get("agent-registry-db")
    assert db.settings["roles"] == ["agent_registry_a", "agent_registry_b"]
    assert db.consumers.external_secrets == (("platform", "agent-registry-db"),)
    assert shipped.get("qdrant-api-key").consumers.deployments == (("qdrant", "qdrant"),)
    demo = load_rotation_policy(POLICIES / "rotation-demo.yaml")
    assert {s.kind for s in demo.secrets} == {"hmac_key", "api_key"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("- {name: a, kind: hmac_key}", "secrets[0] (a): missing path"),
        ("- {name: A_b, kind: hmac_key, path: p}", "name must be lowercase"),
        ("- {name: a, kind: sha, path: p}", "kind must be one of postgres_password"),
        ("- {name: a, kind: hmac_key, path: p, roles: [x, y]}", "unknown key(s) roles"),
        (
            "- {name: a, kind: postgres_password, path: p, roles: [x, x], admin_path: q}",
            "roles must be two different login roles",
        ),
        (
            "- {name: a, kind: hmac_key, path: p, max_age_days: 0}",
            "max_age_days must be a positive",
        ),
        (
            "- {name: a, kind: hmac_key, path: p, consumers: {deployments: [web]}}",
            "'web' is not namespace/name",
        ),
        ("- {name: a, kind: hmac_key, path: p}\n- {name: a, kind: api_key, path: q}", "unique: a"),
    ],
)
def test_mistakes_are_named(tmp_path, entry, message):
    path = tmp_path / "rotation.yaml"
    path.write_text("secrets:\n" + "\n".join("  " + line for line in entry.splitlines()) + "\n")
    with pytest.raises(RotationPolicyError, match=re.escape(message)):
        load_rotation_policy(path)


def test_an_unknown_secret_is_named():
    with pytest.raises(RotationPolicyError, match="no secret named 'nope'"):
        load_rotation_policy().get("nope")
