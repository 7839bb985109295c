import re

import pytest

from gsv_pipelines.lib.backups.policy import BackupPolicyError, load_backup_policy


def test_the_shipped_policy_loads_with_documented_defaults():
    policy = load_backup_policy()
    assert policy.defaults.method == "auto" and policy.defaults.rpo_hours == 26
    assert policy.for_collection("anything") == policy.defaults
    assert policy.defaults.retention.min_count == 3


def test_overrides_inherit_the_defaults(tmp_path):
    path = tmp_path / "backups.yaml"
    path.write_text(
        "defaults:\n  rpo_hours: 12\n"
        "collections:\n  agent_memory_a:\n    method: export\n"
        "platform_db:\n  retention: {keep_last: 2}\n"
        "qdrant_nodes: [http://qdrant-0:6333/, http://qdrant-1:6333]\n"
    )
    policy = load_backup_policy(path)
    a = policy.for_collection("agent_memory_a")
    assert (a.method, a.rpo_hours) == ("export", 12)
    assert policy.platform_db.retention.keep_last == 2
    assert policy.qdrant_nodes == ("http://qdrant-0:6333", "http://qdrant-1:6333")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults:\n  method: rsync\n", "defaults.method must be one of auto, export, snapshot"),
        ("defaults:\n  rpo: 3\n", "defaults: unknown key(s) rpo"),
        ("collections:\n  a:\n    rpo_hours: -1\n", "collections.a.rpo_hours must be a positive"),
        ("platform_db:\n  retention: {keep_last: -1}\n", "platform_db.retention"),
        ("qdrant_nodes: http://x\n", "qdrant_nodes must be a list of URLs"),
        ("colections: {}\n", "unknown key(s) colections"),
        ("defaults: [\n", "is not valid YAML"),
    ],
)
def test_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "backups.yaml"
    path.write_text(text)
    with pytest.raises(BackupPolicyError, match=re.escape(message)):
        load_backup_policy(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(BackupPolicyError, match=r"cannot read backup policy .*absent\.yaml"):
        load_backup_policy(tmp_path / "absent.yaml")
