"""Warehouse writes: validated frames, one transaction per partition, re-runs replace a day."""

from datetime import date

import pandas as pd
import pytest

from gsv_pipelines.lib.usage import warehouse as wh
from gsv_pipelines.lib.usage.tables import EVENT_ROLLUP, EVENT_STATS, QUARANTINE
from tests.defs.usage import crafted

DAY = date(2026, 3, 3)


@pytest.fixture(params=["postgres", "sqlite"])
def warehouse(request, tmp_path) -> str:
    return crafted.databases(request.param, request, tmp_path)[1]


def _rollup(events: int, status: str = "ok", day: date = DAY) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [day],
            "tenant_id": ["alpha"],
            "agent_id": ["bot"],
            "status": [status],
            "events": [events],
            "tokens_in": [10],
            "tokens_out": [5],
            "latency_ms_sum": [12.5],
        }
    )


def test_a_partition_is_replaced_not_appended(warehouse):
    assert wh.write_partition(warehouse, DAY, {EVENT_ROLLUP: _rollup(3)}) == {
        "usage_event_rollup": 1
    }
    wh.write_partition(warehouse, DAY, {EVENT_ROLLUP: _rollup(4)})
    wh.write_partition(
        warehouse, date(2026, 3, 4), {EVENT_ROLLUP: _rollup(9, day=date(2026, 3, 4))}
    )
    frame = wh.read(warehouse, EVENT_ROLLUP, DAY, date(2026, 3, 4)).sort_values("day")
    assert frame[["day", "events"]].values.tolist() == [[DAY, 4], [date(2026, 3, 4), 9]]


def test_an_invalid_frame_writes_nothing_and_says_what_is_wrong(warehouse):
    wh.write_partition(warehouse, DAY, {EVENT_ROLLUP: _rollup(3)})
    bad = _rollup(-1, status="weird")
    stats = pd.DataFrame(
        [
            {
                "day": DAY,
                "deliveries": 1,
                "events": 1,
                "duplicate_deliveries": 0,
                "valid_events": 1,
                "quarantined_events": 0,
                "late_deliveries": 0,
                "received_through": None,
                "extracted_at": pd.Timestamp("2026-03-04"),
            }
        ]
    )
    with pytest.raises(wh.SchemaViolation) as error:
        wh.write_partition(warehouse, DAY, {EVENT_STATS: stats, EVENT_ROLLUP: bad})
    assert str(error.value) == (
        "usage_event_rollup: status: isin(['ok', 'error', 'timeout']) (e.g. 'weird'); "
        "events: greater_than_or_equal_to(1) (e.g. -1)"
    )
    assert wh.read(warehouse, EVENT_ROLLUP, DAY, DAY)["events"].tolist() == [3]
    assert wh.read(warehouse, EVENT_STATS, DAY, DAY).empty


def test_rows_of_another_day_are_refused(warehouse):
    with pytest.raises(wh.SchemaViolation, match=r"rows for \[datetime.date\(2026, 3, 4\)\]"):
        wh.write_partition(warehouse, DAY, {EVENT_ROLLUP: _rollup(1, day=date(2026, 3, 4))})


def test_nulls_survive_the_round_trip(warehouse):
    quarantine = pd.DataFrame(
        {
            "day": [DAY],
            "source": ["gw"],
            "event_id": ["x"],
            "tenant_id": ["ghost"],
            "agent_id": ["bot"],
            "occurred_at": [pd.Timestamp("2026-03-03 13:00")],
            "received_at": [pd.NaT],
            "latency_ms": [float("nan")],
            "status": ["ok"],
            "tokens_in": pd.array([None], dtype="Int64"),
            "tokens_out": pd.array([7], dtype="Int64"),
            "reason": ["unknown_tenant"],
        }
    )
    wh.write_partition(warehouse, DAY, {QUARANTINE: quarantine})
    [row] = wh.read(warehouse, QUARANTINE, DAY, DAY).itertuples()
    assert row.occurred_at == pd.Timestamp("2026-03-03 13:00")
    assert pd.isna(row.received_at) and pd.isna(row.latency_ms) and pd.isna(row.tokens_in)
    assert row.tokens_out == 7


def test_text_with_tabs_backslashes_and_newlines_survives_the_round_trip(warehouse):
    quarantine = pd.DataFrame(
        {
            "day": [DAY],
            "source": ["gw\tbatch"],
            "event_id": ["a\\b\nc\r"],
            "tenant_id": [""],
            "agent_id": ["\\N"],
            "occurred_at": [pd.Timestamp("2026-03-03 13:00:00.000001")],
            "received_at": [pd.Timestamp("2026-03-03 13:00:01")],
            "latency_ms": [0.1 + 0.2],
            "status": ["ok"],
            "tokens_in": pd.array([1], dtype="Int64"),
            "tokens_out": pd.array([None], dtype="Int64"),
            "reason": ["unknown_tenant"],
        }
    )
    wh.write_partition(warehouse, DAY, {QUARANTINE: quarantine})
    [row] = wh.read(warehouse, QUARANTINE, DAY, DAY).itertuples()
    assert (row.source, row.event_id, row.tenant_id, row.agent_id) == (
        "gw\tbatch",
        "a\\b\nc\r",
        "",
        "\\N",
    )
    assert row.occurred_at == pd.Timestamp("2026-03-03 13:00:00.000001")
    assert row.latency_ms == 0.1 + 0.2
    assert pd.isna(row.tokens_out)
