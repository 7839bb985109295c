"""The usage simulator: deterministic, realistic in its shapes, written alike to both engines."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from gsv_pipelines.demo import usage_sim
from gsv_pipelines.demo.data import seed_platform_db
from tests.defs.usage import crafted

WEDNESDAY = date(2026, 3, 4)
SATURDAY = date(2026, 3, 7)


def _config(**overrides) -> usage_sim.SimConfig:
    base = {"last_day": date(2026, 3, 10), "days": 7, "events_per_day": 50_000, "seed": 11}
    return usage_sim.SimConfig(**{**base, **overrides})


def _day(config, day) -> pd.DataFrame:
    world = usage_sim.build_world(config)
    return pd.concat(list(usage_sim.events_for_day(world, config, day)), ignore_index=True)


def test_the_same_seed_gives_the_same_events_and_another_seed_others():
    config = _config()
    first, again = _day(config, WEDNESDAY), _day(config, WEDNESDAY)
    pd.testing.assert_frame_equal(first, again)
    other = _day(_config(seed=12), WEDNESDAY)
    assert not first["event_id"].isin(other["event_id"]).any()


def test_duplicates_late_events_and_malformed_rows_come_at_their_rates():
    frame = _day(_config(), WEDNESDAY)
    n = len(frame)
    duplicates = frame.duplicated(["source", "event_id"]).sum() / n
    late = (frame["received_at"] >= pd.Timestamp("2026-03-05")).sum() / n
    assert 0.003 < duplicates < 0.007
    assert 0.007 < late < 0.013
    # a duplicate is the same delivery again, received later
    dup = frame[frame.duplicated(["source", "event_id"], keep=False)].sort_values("received_at")
    pairs = dup.groupby(["source", "event_id"])
    assert (pairs["latency_ms"].nunique(dropna=False) == 1).all()
    malformed = (
        ~frame["status"].isin(["ok", "error", "timeout"])
        | frame["latency_ms"].isna()
        | (frame["latency_ms"] < 0)
        | (frame["tokens_in"] < 0)
        | (frame["tenant_id"] == "ghost-tenant")
        | (frame["agent_id"] == "ghost-agent")
    ).sum()
    assert 0 < malformed < 0.002 * n


def test_without_volume_noise_a_day_has_exactly_its_weekday_share_of_events():
    assert _day(_config(volume_sigma=0.0), WEDNESDAY)["event_id"].nunique() == 52_500  # x 1.05
    assert _day(_config(volume_sigma=0.0), SATURDAY)["event_id"].nunique() == 27_500  # x 0.55
    assert _day(_config(), WEDNESDAY)["event_id"].nunique() != 52_500


def test_usage_follows_power_laws_and_daily_and_weekly_cycles():
    config = _config()
    wednesday, saturday = _day(config, WEDNESDAY), _day(config, SATURDAY)
    assert len(saturday) < 0.7 * len(wednesday)  # weights 0.55 and 1.05
    shares = wednesday["tenant_id"].value_counts(normalize=True)
    assert shares.iloc[0] > 4 * shares.median()
    agents = wednesday["agent_id"].value_counts(normalize=True)
    assert agents.iloc[0] > 4 * agents.median()
    hours = wednesday["occurred_at"].dt.hour.value_counts()
    assert hours[14] > 2.5 * hours[3]
    ok = wednesday[wednesday["status"] == "ok"]["latency_ms"]
    # lognormal: a long right tail
    assert ok.quantile(0.99) > 3 * ok.median()


def test_the_window_has_an_upgrade_a_churn_and_a_new_tenant():
    world = usage_sim.build_world(_config())
    first = pd.Timestamp("2026-03-04")
    subs = pd.DataFrame(world.subscriptions)
    in_window = subs[subs["ended_at"].notna() & (subs["ended_at"] >= first)]
    assert {"replaced", "canceled"} <= set(in_window["status"])
    upgraded = in_window[in_window["status"] == "replaced"].iloc[0]
    successor = subs[
        (subs["tenant_id"] == upgraded["tenant_id"]) & (subs["started_at"] == upgraded["ended_at"])
    ]
    assert successor["plan_id"].tolist() == ["business"]
    [newcomer] = [t for t in world.tenants if t[2] >= first]
    assert newcomer[0] == "tenant-new"
    churned = in_window[in_window["status"] == "canceled"]["tenant_id"].iloc[0]
    events = _day(_config(), date(2026, 3, 10))
    assert churned not in set(events["tenant_id"])
    assert "tenant-new" in set(events["tenant_id"])


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_seed_usage_writes_the_same_world_idempotently(request, tmp_path, kind):
    url, _ = crafted.databases(kind, request, tmp_path)
    assert seed_platform_db(url)["tenants"] == 6
    kwargs = {"days": 2, "scale": 0.25, "seed": 5, "last_day": date(2026, 3, 10)}
    first = usage_sim.seed_usage(url, **kwargs)
    again = usage_sim.seed_usage(url, **kwargs)
    assert first == again
    assert first["partitions"] == ["2026-03-09", "2026-03-10"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(*), sum(tokens_in), count(DISTINCT event_id) FROM usage_events")
        ).one()
        tenants = conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar_one()
    engine.dispose()
    assert stored[0] == first["deliveries"]
    assert stored[0] - stored[2] == first["duplicate_deliveries"]
    assert tenants == first["tenants"] == 24
    config = _config(days=2, events_per_day=5000, seed=5)
    expected = pd.concat(
        [_day(config, date(2026, 3, 9)), _day(config, date(2026, 3, 10))], ignore_index=True
    )
    assert stored[0] == len(expected)
    assert stored[1] == int(np.sum(expected["tokens_in"]))
