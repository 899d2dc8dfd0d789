"""``beam_pipeline.resources``: the resource sampler's figures are those of the
``ResourceMetric`` rows."""

from __future__ import annotations

import json
import time

from beam_pipeline import db, resources


def test_resource_sampler_busy_loop() -> None:
    with resources.ResourceSampler(interval=0.05) as sampler:
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            sum(i * i for i in range(1000))
    res = sampler.result()
    assert set(res) == set(resources.RESOURCE_FIELDS)
    assert set(res) == {c.key for c in db.ResourceMetric.__table__.columns} - {"id", "run_id"}
    samples = json.loads(res["samples_json"])
    assert len(samples) >= 3
    assert 20.0 < res["cpu_percent_peak"] < 100.0 * 64
    assert 0 <= res["cpu_percent_avg"] <= res["cpu_percent_peak"]
    assert 1 << 20 < res["rss_bytes_avg"] <= res["rss_bytes_peak"] < 1 << 40
    for key in ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes"):
        assert res[key] is None or res[key] >= 0
