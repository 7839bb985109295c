from gsv_pipelines.lib.scanning.retry import (
    CANCELED,
    FAILED,
    IN_PROGRESS,
    SUCCEEDED,
    ScanRun,
    backoff_seconds,
    decide,
)

CONFIG = {"ops": {"scanning__image_scan": {"config": {"reference": "r@sha256:1"}}}}


def _failed(ended_at: float) -> ScanRun:
    return ScanRun(FAILED, ended_at, CONFIG, {"gsv/image": "api:1.0"})


def test_the_backoff_doubles_with_each_failure_up_to_its_cap():
    assert [backoff_seconds(n, 300, 3600) for n in (1, 2, 3, 4, 5)] == [300, 600, 1200, 2400, 3600]


def test_a_failed_scan_waits_for_its_backoff_then_is_retried_with_its_config():
    waiting = decide([_failed(1000)], now=1200, base=300)
    assert (waiting.action, waiting.attempt, waiting.due_in) == ("wait", 2, 100)
    retry = decide([_failed(1000)], now=1300, base=300)
    assert (retry.action, retry.attempt) == ("retry", 2)
    assert retry.run_config == CONFIG and retry.tags["gsv/image"] == "api:1.0"


def test_only_consecutive_failures_count_and_the_newest_one_starts_the_wait():
    runs = [_failed(5000), _failed(2000), ScanRun(SUCCEEDED, 1000), _failed(500)]
    decision = decide(runs, now=5000 + 599, base=300)
    assert (decision.action, decision.attempt, decision.due_in) == ("wait", 3, 1)
    assert decide(runs, now=5600, base=300).action == "retry"


def test_a_digest_without_runs_is_scanned_one_running_or_canceled_is_left_alone():
    assert decide([], now=0).action == "retry"
    assert decide([ScanRun(IN_PROGRESS, None), _failed(0)], now=10**9).action == "running"
    assert decide([ScanRun(CANCELED, 0), _failed(0)], now=10**9).action == "canceled"
