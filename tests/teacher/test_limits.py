"""Rate limits against the local HTTP server: RPM kept, no 429 storm, one 429 pauses every sender."""

import asyncio
import time

import pytest
from test_engine import FAST, requests

from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherEngine
from dagster_project.teacher.limits import EngineLimits, PauseGate, RateBucket
from dagster_project.teacher.server import serve_in_thread


def make_engine(url: str, cache_dir, limits: EngineLimits, **kwargs) -> TeacherEngine:
    env = {"DISTILL_TEACHER_BASE_URL": url}
    return TeacherEngine(cache=ResponseCache(cache_dir), env=env, limits=limits, **{**FAST, **kwargs})


def test_engine_keeps_the_servers_rpm_without_a_429_storm(tmp_path, fake_teacher):
    rpm, n = 600, 70  # 10 requests/s: ~7 s
    with serve_in_thread(teacher=fake_teacher, rpm_limit=rpm, rpm_burst_s=1.0) as url:
        eng = make_engine(url, tmp_path, EngineLimits(concurrency=64, rpm=rpm))
        results = eng.run(requests(n))
        events = url.events
    assert all(r.ok for r in results)
    n429 = sum(1 for _, outcome in events if outcome == "rpm_429")
    assert n429 <= 2, f"{n429} 429s"
    times = sorted(t for t, outcome in events if outcome == "ok")
    rate_per_min = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert abs(rate_per_min - rpm) <= 0.1 * rpm, rate_per_min
    # Any 10 s window (here: the whole run) holds no more than the limit allows.
    assert len(times) <= rpm / 60 * (times[-1] - times[0]) + 10 + 1


def test_a_429_pauses_every_sender_until_retry_after(tmp_path, fake_teacher):
    retry_after = 0.5
    with serve_in_thread(teacher=fake_teacher, rate_429=0.05, retry_after_s=retry_after, latency_ms=5) as url:
        eng = make_engine(url, tmp_path, EngineLimits(concurrency=32))
        results = eng.run(requests(150))
        events = url.events
    assert all(r.ok for r in results)
    n429 = [t for t, outcome in events if outcome == "429"]
    assert n429 and eng.counters.rate_limited == len(n429) == eng.counters.retry_reasons["http 429"]
    assert eng.gate.pauses >= 1 and eng.counters.paused_s >= retry_after
    # After the first 429 reaches the engine, nothing new is sent until its Retry-After has passed:
    # only the requests already in flight (at most `concurrency`) may still arrive in that window.
    first = n429[0]
    inside = [t for t, _ in events if first + 0.15 < t < first + retry_after - 0.05]
    assert len(inside) <= 5, f"{len(inside)} requests arrived during the pause"


def test_429_without_limits_configured_still_completes(tmp_path, fake_teacher):
    """A server enforcing an RPM the engine was not told about: 429s pause, retry, and everything finishes."""
    with serve_in_thread(teacher=fake_teacher, rpm_limit=1200, rpm_burst_s=0.5) as url:
        eng = make_engine(url, tmp_path, EngineLimits(concurrency=16), max_retries=20)
        results = eng.run(requests(40))
        n429 = url.stats["rpm_429"]
    assert all(r.ok for r in results)
    assert eng.counters.rate_limited == n429 and eng.counters.retries == n429
    assert eng.counters.calls == 40 + n429
    # The first wave (16), then about one per request while the limiter settles from the sending rate
    # onto the limit (measured: 47-56; it starts from the sending rate cut by the 429 share, so a steady
    # share of stray 429s does not collapse it). A storm is every sender retrying at once, over and over.
    assert n429 <= 16 + 56, f"{n429} 429s for 40 requests: a storm"


def test_rate_bucket_spaces_reservations():
    bucket = RateBucket(per_minute=600, burst_s=0.0)  # 10/s, capacity one request
    waits = [bucket.reserve(1) for _ in range(5)]
    assert waits[0] == 0.0
    assert waits[1:] == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.01)
    bucket.refund(0.4)  # level -4 -> -3.6; the next request waits 0.46 s, not 0.5 s
    assert bucket.reserve(1) == pytest.approx(0.46, abs=0.02)


def test_token_bucket_reserves_then_refunds():
    bucket = RateBucket(per_minute=6000, burst_s=1.0)  # 100 tokens/s, capacity 100
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5, abs=0.01)
    bucket.refund(50)  # the call used nothing
    assert bucket.reserve(10) == pytest.approx(0.1, abs=0.01)


def test_pause_gate_holds_senders():
    gate = PauseGate()

    async def main() -> float:
        gate.pause(0.2)
        gate.pause(0.1)  # an earlier end does not shorten the pause
        start = time.monotonic()
        await asyncio.gather(gate.wait(), gate.wait())
        return time.monotonic() - start

    assert asyncio.run(main()) >= 0.19
    assert gate.pauses == 1


def test_limits_from_env_name_a_bad_value():
    limits = EngineLimits.from_env({"DISTILL_TEACHER_RPM": "600", "DISTILL_TEACHER_CONCURRENCY": "32"})
    assert limits.rpm == 600 and limits.concurrency == 32 and limits.tpm_in is None
    with pytest.raises(ValueError, match="DISTILL_TEACHER_TPM_OUT"):
        EngineLimits.from_env({"DISTILL_TEACHER_TPM_OUT": "lots"})


def test_input_tpm_paces_requests(tmp_path, fake_teacher):
    from dagster_project.teacher.limits import estimate_prompt_tokens

    reqs = requests(6)
    per_request = estimate_prompt_tokens(reqs[0].messages)
    tpm_in = per_request * 60 * 4  # four requests' worth of input tokens a second
    with serve_in_thread(teacher=fake_teacher) as url:
        eng = make_engine(url, tmp_path, EngineLimits(concurrency=64, tpm_in=tpm_in))
        start = time.monotonic()
        assert all(r.ok for r in eng.run(reqs))
        elapsed = time.monotonic() - start
        times = sorted(t for t, _ in url.events)
    assert elapsed >= 5 / 4 * 0.9  # six requests, the first free: five spaced by a quarter second
    assert (times[-1] - times[0]) >= 5 / 4 * 0.9
