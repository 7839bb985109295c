"""Incidents in the store: one message when one opens, none while it lasts, one when it clears;
out-of-order and repeated observations change nothing; the state outlives the process."""

from gsv_pipelines.lib.alerts.incidents import Incidents, Observation, incident_id
from gsv_pipelines.lib.core.store import ArtefactStore

SUBJECT = {"kind": "check", "asset": "backups/qdrant_backup", "check": "backup_fresh",
           "partition": "2026-05-01|agent_memory_support_bot"}  # fmt: skip


def seen(failed: bool, at: float, **overrides) -> Observation:
    values = {
        "subject": SUBJECT,
        "what": "backup_fresh",
        "label": "backups/qdrant_backup [2026-05-01|agent_memory_support_bot]",
        "failed": failed,
        "at": at,
        "severity": "error",
        "run_id": f"run-{at:g}",
        "domains": ("backups",),
        "summary": "newest backup 30.0 h old, RPO 26 h" if failed else "within its RPO",
        "figures": {"stale": 1 if failed else 0},
    }
    return Observation(**{**values, **overrides})


def test_one_message_when_it_opens_none_while_it_lasts_one_when_it_clears(tmp_path):
    incidents, sent = Incidents(ArtefactStore(str(tmp_path))), []
    first = incidents.observe(seen(True, 1000.0), sent.append)
    assert first.status == "firing" and first.title == (
        "backup_fresh failed: backups/qdrant_backup [2026-05-01|agent_memory_support_bot]"
    )
    assert first.since == "1970-01-01T00:16:40+00:00" and first.figures == {"stale": 1}
    assert incidents.observe(seen(True, 2000.0), sent.append) is None
    assert incidents.observe(seen(True, 3000.0), sent.append) is None
    state = incidents.get(incident_id(SUBJECT))
    assert (state["status"], state["occurrences"], state["last_run_id"]) == ("open", 3, "run-3000")

    cleared = incidents.observe(seen(False, 1000.0 + 2 * 3600 + 60), sent.append)
    assert cleared.status == "resolved" and cleared.title.startswith("backup_fresh recovered")
    assert cleared.since == first.since and cleared.severity == "error"
    assert cleared.summary.startswith("Passing again after 2 h 1 min and 3 failure(s)")
    assert sent == [first, cleared]
    assert incidents.observe(seen(False, 9000.0), sent.append) is None
    # A new failure after the recovery is a new incident, with a new "since".
    again = incidents.observe(seen(True, 10000.0), sent.append)
    assert again.status == "firing" and again.since == "1970-01-01T02:46:40+00:00"
    assert len(sent) == 3


def test_passing_subjects_that_never_failed_write_nothing(tmp_path):
    store = ArtefactStore(str(tmp_path))
    assert Incidents(store).observe(seen(False, 1.0), [].append) is None
    assert Incidents(store).all() == []


def test_an_observation_older_than_the_last_applied_changes_nothing(tmp_path):
    incidents, sent = Incidents(ArtefactStore(str(tmp_path))), []
    incidents.observe(seen(True, 100.0), sent.append)
    incidents.observe(seen(False, 200.0), sent.append)
    # The failure of an earlier run, read late (another feed, a replayed tick): still resolved.
    assert incidents.observe(seen(True, 150.0), sent.append) is None
    assert incidents.observe(seen(False, 200.0), sent.append) is None
    assert [a.status for a in sent] == ["firing", "resolved"]
    assert incidents.get(incident_id(SUBJECT))["status"] == "resolved"


def test_the_state_outlives_the_object_that_wrote_it(tmp_path):
    sent = []
    Incidents(ArtefactStore(str(tmp_path))).observe(seen(True, 1.0), sent.append)
    # A new process: a new store client over the same folder.
    later = Incidents(ArtefactStore(str(tmp_path)))
    assert later.observe(seen(True, 2.0), sent.append) is None
    assert later.observe(seen(False, 3.0), sent.append).status == "resolved"
    assert [a.status for a in sent] == ["firing", "resolved"]


def test_partitions_are_separate_incidents(tmp_path):
    incidents, sent = Incidents(ArtefactStore(str(tmp_path))), []
    other = {**SUBJECT, "partition": "2026-05-01|agent_memory_sales_assistant"}
    incidents.observe(seen(True, 1.0), sent.append)
    incidents.observe(seen(True, 2.0, subject=other), sent.append)
    incidents.observe(seen(False, 3.0), sent.append)
    assert [(a.status, a.subject["partition"]) for a in sent] == [
        ("firing", SUBJECT["partition"]),
        ("firing", other["partition"]),
        ("resolved", SUBJECT["partition"]),
    ]
    assert {i["status"] for i in incidents.all()} == {"open", "resolved"}
