import pytest

from gsv_pipelines.lib.drills.policy import DrillPolicyError, Objectives, load_drill_policy
from gsv_pipelines.lib.drills.run import drill_targets


def test_the_shipped_policy_drills_every_collection_and_the_database():
    policy = load_drill_policy()
    assert policy.qdrant.collections is None
    assert policy.qdrant.objectives == Objectives(rto_seconds=1800, rpo_seconds=26 * 3600)
    assert policy.vault is None
    targets = drill_targets(policy, ["b", "a"], "platform")
    assert [(t.kind, t.target) for t in targets] == [
        ("qdrant", "a"),
        ("qdrant", "b"),
        ("platform_db", "platform"),
    ]


def test_overrides_and_named_collections(tmp_path):
    path = tmp_path / "drills.yaml"
    path.write_text(
        "defaults: {rto_minutes: 5, rpo_hours: 2}\n"
        "targets:\n"
        "  qdrant:\n"
        "    collections: [memory]\n"
        "    overrides: {memory: {rto_minutes: 1}}\n"
        "  vault: {unseal_keys_env: BAO_KEYS, rpo_hours: 48}\n"
        "scratch_dir: scratch\n"
    )
    policy = load_drill_policy(path)
    targets = drill_targets(policy, ["memory", "other"], "platform")
    assert [(t.kind, t.target, t.objectives) for t in targets] == [
        ("qdrant", "memory", Objectives(60, 7200)),
        ("vault", "vault", Objectives(300, 48 * 3600)),
    ]
    assert policy.vault.unseal_keys_env == "BAO_KEYS"
    assert policy.scratch_dir.is_absolute()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets: {mongo: {}}", "unknown key(s) mongo"),
        ("defaults: {rto_minutes: 0}", "defaults.rto_minutes must be a positive number"),
        ("targets: {qdrant: {collections: memory}}", 'collections must be "*" or a list'),
        ("targets: {qdrant: {scratch_name: fixed}}", "scratch_name must be a text with {target}"),
        ("targets: {qdrant: {scratch_name: '{target}_{when}'}}", "only {target} and {stamp}"),
        ("targets: {vault: {unseal_keys_env: 'not a name'}}", "must name an environment variable"),
        ("targets: {platform_db: {sample_size: 3}}", "unknown key(s) sample_size"),
        ("[1, 2]", "must be a mapping"),
    ],
)
def test_a_bad_policy_names_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "drills.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DrillPolicyError) as caught:
        load_drill_policy(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
