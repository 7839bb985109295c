"""The latency sketch: buckets, representatives, nearest-rank quantiles, merging."""

import math

from gsv_pipelines.lib.usage import sketch as sk


def test_a_bucket_holds_the_values_between_two_powers_of_gamma():
    assert sk.GAMMA == 1.01 / 0.99
    # 100 ms: ln(100) / ln(1.0202...) = 230.25..., so bucket 231, which holds (gamma^230, gamma^231]
    assert sk.bucket(100.0) == 231
    assert sk.GAMMA**230 < 100.0 <= sk.GAMMA**231
    assert sk.bucket(0.0) == sk.bucket(0.01) == math.ceil(math.log(0.01) / math.log(sk.GAMMA))


def test_the_representative_is_within_one_percent_of_anything_in_its_bucket():
    for value in (0.5, 7.0, 99.9, 100.0, 1234.5, 29_999.0):
        estimate = sk.representative(sk.bucket(value))
        assert abs(estimate - value) <= 0.01 * value


def test_nearest_rank_quantiles_of_a_sketch():
    # 10, 20, ..., 250 and 300 ms: 26 values. Nearest rank ceil(q * 26): p50 -> 13th (130),
    # p95 -> 25th (250), p99 -> 26th (300).
    values = [10.0 * k for k in range(1, 26)] + [300.0]
    sketch = sk.merge([{sk.bucket(v): 1} for v in values])
    p50, p95, p99 = sk.quantiles(sketch, (0.5, 0.95, 0.99))
    assert p50 == sk.representative(sk.bucket(130.0))
    assert p95 == sk.representative(sk.bucket(250.0))
    assert p99 == sk.representative(sk.bucket(300.0))
    assert abs(p50 - 130.0) <= 1.3 and abs(p99 - 300.0) <= 3.0


def test_merged_day_sketches_give_the_month_quantiles():
    day1 = {sk.bucket(100.0): 9, sk.bucket(200.0): 2}
    day2 = {sk.bucket(100.0): 3, sk.bucket(200.0): 2}
    month = sk.merge([day1, day2])
    assert month == {sk.bucket(100.0): 12, sk.bucket(200.0): 4}
    # 16 values: p50 -> 8th (100 ms), p95 -> 16th (200 ms)
    assert sk.quantiles(month, (0.5, 0.95)) == [
        sk.representative(sk.bucket(100.0)),
        sk.representative(sk.bucket(200.0)),
    ]


def test_an_empty_sketch_has_no_quantiles():
    assert sk.quantiles({}, (0.5, 0.99)) == [None, None]
