"""One day's extraction on the crafted data (tests/defs/usage/crafted.py), on PostgreSQL and on
SQLite, against expectations computed by hand."""

from datetime import datetime, timedelta

import pytest

from gsv_pipelines.lib.usage import pg as usage_pg
from gsv_pipelines.lib.usage import sketch as usage_sketch
from gsv_pipelines.lib.usage.extract import extract_day
from tests.defs.usage import crafted


@pytest.fixture(params=["postgres", "sqlite"])
def source(request, tmp_path) -> str:
    url, _ = crafted.databases(request.param, request, tmp_path)
    crafted.build(url)
    return url


def _rollup(extract) -> dict:
    return {
        (r.tenant_id, r.agent_id, r.status): (r.events, r.tokens_in, r.tokens_out, r.latency_ms_sum)
        for r in extract.rollup.itertuples()
    }


def test_the_day_is_deduplicated_validated_and_rolled_up(source):
    extract = extract_day(source, crafted.DAY)
    assert _rollup(extract) == {
        # a3-0 (delivered twice), a3-1 (first delivery: ok, 100 ms), a3-edge
        ("alpha", "bot", "ok"): (3, 300, 150, 300.0),
        ("alpha", "coder", "error"): (1, 100, 0, 300.0),
        # b3-0 from two sources: two events
        ("beta", "bot", "ok"): (2, 20, 20, 400.0),
        # 10 + 20 + ... + 250 ms
        ("gamma", "coder", "ok"): (25, 25_000, 25_000, 3250.0),
    }
    assert set(extract.rollup["day"]) == {crafted.DAY}
    # 6 alpha deliveries (4 events), 2 beta, 25 gamma, 7 malformed (6 events); a4-0 is Mar 4's.
    assert extract.stats["deliveries"] == 40
    assert extract.stats["events"] == 37
    assert extract.stats["duplicate_deliveries"] == 3
    assert extract.stats["valid_events"] == 31
    assert extract.stats["quarantined_events"] == 6
    # a3-edge, at 23:59:59.5, was received 1 s later: after the day ended
    assert extract.stats["late_deliveries"] == 1
    # the latest received: a3-edge
    assert extract.stats["received_through"] == datetime(2026, 3, 4, 0, 0, 0, 500000)


def test_every_malformed_event_is_quarantined_with_its_first_broken_rule(source):
    extract = extract_day(source, crafted.DAY)
    quarantine = extract.quarantine.set_index("event_id")
    assert quarantine["reason"].to_dict() == {
        "x-agent": "unknown_agent",
        "x-neglat": "latency_out_of_range",
        "x-negtok": "negative_tokens",
        "x-nolat": "missing_latency",
        "x-status": "unknown_status",
        "x-tenant": "unknown_tenant",
    }
    assert extract.quarantined_by_reason == dict.fromkeys(
        [
            "latency_out_of_range",
            "missing_latency",
            "negative_tokens",
            "unknown_agent",
            "unknown_status",
            "unknown_tenant",
        ],
        1,
    )
    row = quarantine.loc["x-nolat"]
    assert (row["source"], row["tenant_id"], row["agent_id"], row["status"]) == (
        "gw",
        "alpha",
        "bot",
        "ok",
    )
    assert row["latency_ms"] != row["latency_ms"]  # NaN: delivered without a latency
    assert row["occurred_at"] == datetime(2026, 3, 3, 13, 0)
    assert row["received_at"] == datetime(2026, 3, 3, 13, 0, 1)
    assert (row["tokens_in"], row["tokens_out"]) == (1, 1)
    assert quarantine.loc["x-negtok", "tokens_in"] == -1
    assert quarantine.loc["x-tenant", "tenant_id"] == "ghost"


def test_the_sketch_counts_each_valid_latency_once_in_its_bucket(source):
    extract = extract_day(source, crafted.DAY)
    sketch = {(r.agent_id, r.bucket): r.events for r in extract.sketch.itertuples()}
    b = usage_sketch.bucket
    expected = {("bot", b(100.0)): 3, ("bot", b(200.0)): 2, ("coder", b(300.0)): 1}
    for k in range(25):
        key = ("coder", b(10.0 * (k + 1)))
        expected[key] = expected.get(key, 0) + 1
    assert sketch == expected
    assert sum(sketch.values()) == 31


def test_a_late_event_is_counted_when_the_day_is_extracted_again(source):
    before = extract_day(source, crafted.DAY)
    crafted.insert_events(source, [crafted.LATE_EVENT])
    after = extract_day(source, crafted.DAY)
    assert _rollup(after)[("beta", "bot", "ok")] == (3, 30, 30, 600.0)
    assert after.stats["events"] == before.stats["events"] + 1
    assert after.stats["late_deliveries"] == 2
    assert after.stats["received_through"] == datetime(2026, 3, 4, 2, 0)


def test_an_empty_day_extracts_to_nothing(source):
    extract = extract_day(source, crafted.DAY.replace(day=20))
    assert extract.rollup.empty and extract.sketch.empty and extract.quarantine.empty
    assert extract.stats["deliveries"] == 0 and extract.stats["events"] == 0
    assert extract.stats["received_through"] is None


@pytest.mark.parametrize("workers", [0, 1])
def test_postgres_gives_the_same_day_with_or_without_a_parallel_worker(request, tmp_path, workers):
    url, _ = crafted.databases("postgres", request, tmp_path)
    crafted.build(url)
    extract = extract_day(url, crafted.DAY, workers=workers)
    assert _rollup(extract)[("gamma", "coder", "ok")] == (25, 25_000, 25_000, 3250.0)
    assert extract.stats["events"] == 37 and extract.stats["quarantined_events"] == 6
    assert extract.sketch["events"].sum() == 31


def test_tokens_beyond_32_bits_are_counted_once(source):
    noon = datetime(2026, 3, 3, 12, 0)
    big = ("gw", "big-0", "gamma", "coder", noon, 100.0, "ok", 3_000_000_000, 5,
           noon + timedelta(seconds=1))  # fmt: skip
    # delivered again later, with other tokens: the first delivery counts
    crafted.insert_events(source, [big, (*big[:7], 4_000_000_000, 6, noon + timedelta(hours=1))])
    extract = extract_day(source, crafted.DAY)
    # g3-00..g3-24 (25 events, 25,000/25,000 tokens, 3,250 ms) and big-0
    assert _rollup(extract)[("gamma", "coder", "ok")] == (26, 3_000_025_000, 25_005, 3350.0)
    assert (extract.stats["deliveries"], extract.stats["events"]) == (42, 38)
    assert extract.stats["valid_events"] == 32


def test_postgres_without_a_listable_set_of_ids_gives_the_same_day(request, tmp_path, monkeypatch):
    # Past DENSE_CELLS (tenant, agent, status) combinations, deliveries carry two id hashes and
    # the sums are kept sparse.
    monkeypatch.setattr(usage_pg, "DENSE_CELLS", 0)
    url, _ = crafted.databases("postgres", request, tmp_path)
    crafted.build(url)
    extract = extract_day(url, crafted.DAY)
    assert _rollup(extract) == {
        ("alpha", "bot", "ok"): (3, 300, 150, 300.0),
        ("alpha", "coder", "error"): (1, 100, 0, 300.0),
        ("beta", "bot", "ok"): (2, 20, 20, 400.0),
        ("gamma", "coder", "ok"): (25, 25_000, 25_000, 3250.0),
    }
    assert (extract.stats["events"], extract.stats["quarantined_events"]) == (37, 6)
    assert extract.sketch["events"].sum() == 31


def test_postgres_packed_in_groups_gives_the_same_day(request, tmp_path, monkeypatch):
    # A table that may hold more deliveries than one bytea can (1 GB) is packed in groups of
    # event hashes; here any table is "big".
    monkeypatch.setattr(usage_pg, "GROUP_DELIVERIES", 5)
    chosen = []
    pack_groups = usage_pg.pack_groups
    monkeypatch.setattr(
        usage_pg, "pack_groups", lambda rows: chosen.append(pack_groups(rows)) or chosen[-1]
    )
    url, _ = crafted.databases("postgres", request, tmp_path)
    crafted.build(url)
    extract = extract_day(url, crafted.DAY)
    assert chosen[0] > 1
    assert _rollup(extract) == {
        ("alpha", "bot", "ok"): (3, 300, 150, 300.0),
        ("alpha", "coder", "error"): (1, 100, 0, 300.0),
        ("beta", "bot", "ok"): (2, 20, 20, 400.0),
        ("gamma", "coder", "ok"): (25, 25_000, 25_000, 3250.0),
    }
    assert (extract.stats["deliveries"], extract.stats["events"]) == (40, 37)
    assert extract.stats["quarantined_events"] == 6 and extract.stats["late_deliveries"] == 1
    assert extract.stats["received_through"] == datetime(2026, 3, 4, 0, 0, 0, 500000)
    assert extract.sketch["events"].sum() == 31


def test_the_groups_keep_each_bytea_under_its_limit():
    assert usage_pg.pack_groups(0) == 1
    assert usage_pg.pack_groups(usage_pg.GROUP_DELIVERIES) == 1
    assert usage_pg.pack_groups(usage_pg.GROUP_DELIVERIES + 1) == 2
    assert usage_pg.pack_groups(900_000_000) == 64  # 90 days of 10M
