"""The cache's DB generations and locks (real files, real flock, threads for the processes)."""

import fcntl
import json
import threading
from pathlib import Path

import pytest

from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, write_trivy_db
from gsv_pipelines.lib.scanning.trivy_cache import TrivyCache, TrivyCacheError


def _publish(cache: TrivyCache):
    with cache.staging() as staged:
        write_trivy_db(staged, list(DEMO_ADVISORIES))
        return cache.publish(staged)


def test_a_staged_db_is_invisible_until_published_then_current(tmp_path):
    cache = TrivyCache(tmp_path)
    assert cache.current() is None
    with cache.staging() as staged:
        write_trivy_db(staged, list(DEMO_ADVISORIES))
        assert cache.current() is None
        generation = cache.publish(staged)
    assert cache.current() == generation
    assert generation.metadata()["Version"] == 2
    pointer = json.loads((tmp_path / "db-current.json").read_text())
    assert pointer["generation"] == generation.id
    assert not list((tmp_path / "db-staging").iterdir())


def test_an_incomplete_db_is_never_published(tmp_path):
    cache = TrivyCache(tmp_path)
    with cache.staging() as staged:
        (staged / "db").mkdir()
        (staged / "db" / "metadata.json").write_text("{}")  # no trivy.db
        with pytest.raises(TrivyCacheError, match="holds no complete DB"):
            cache.publish(staged)
    assert cache.current() is None


def test_a_db_written_in_place_is_the_only_generation(tmp_path):
    write_trivy_db(tmp_path, list(DEMO_ADVISORIES))
    current = TrivyCache(tmp_path).current()
    assert current.id == "in-place" and current.folder == tmp_path


def test_a_pointer_to_a_missing_generation_is_a_clear_error(tmp_path):
    (tmp_path / "db-current.json").write_text(json.dumps({"generation": "gone"}))
    with pytest.raises(TrivyCacheError, match="names generation gone, which holds no complete DB"):
        TrivyCache(tmp_path).current()


def test_old_generations_go_only_when_nobody_reads_one(tmp_path):
    cache = TrivyCache(tmp_path)
    old = _publish(cache)
    new = _publish(cache)
    with cache.reading():
        assert cache.prune() == []
    assert old.folder.is_dir()
    assert cache.prune() == [old.id]
    assert not old.folder.exists() and cache.current() == new


def _gate_closed(tmp_path) -> bool:
    """Whether someone holds the gate exclusively (a switch is under way)."""
    with open(tmp_path / ".gsv-trivy-gate.lock", "a") as gate:
        try:
            fcntl.flock(gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(gate, fcntl.LOCK_UN)
        return False


def _waits_for_a_lock(thread_id: int) -> bool:
    """Whether the thread sleeps in the kernel waiting for a file lock (Linux)."""
    return Path(f"/proc/self/task/{thread_id}/wchan").read_text() == "locks_lock_inode_wait"


def test_draining_waits_for_scans_in_flight_and_holds_new_ones_at_the_gate(tmp_path):
    cache = TrivyCache(tmp_path)
    events: list[str] = []
    first_in, finish_first = threading.Event(), threading.Event()
    drained, finish_switch = threading.Event(), threading.Event()
    second_in = threading.Event()
    second_id: list[int] = []

    def first_scan():
        with cache.scanning():
            events.append("first scan runs")
            first_in.set()
            finish_first.wait()
            events.append("first scan ends")

    def switch():
        with cache.drained():
            events.append("drained")
            drained.set()
            finish_switch.wait()
            events.append("switched")

    def second_scan():
        second_id.append(threading.get_native_id())
        with cache.scanning():
            events.append("second scan runs")
            second_in.set()

    first = threading.Thread(target=first_scan)
    first.start()
    first_in.wait()
    switching = threading.Thread(target=switch)
    switching.start()
    while not _gate_closed(tmp_path):
        pass
    # The switch holds the gate and waits for the scan in flight; a new scan waits at the gate.
    second = threading.Thread(target=second_scan)
    second.start()
    while not (second_id and _waits_for_a_lock(second_id[0])):
        pass
    assert not drained.is_set()
    finish_first.set()
    drained.wait()
    assert not second_in.is_set()
    finish_switch.set()
    for thread in (first, switching, second):
        thread.join()
    assert events == [
        "first scan runs",
        "first scan ends",
        "drained",
        "switched",
        "second scan runs",
    ]
