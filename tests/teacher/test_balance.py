"""Several base URLs in DISTILL_TEACHER_BASE_URL: requests are balanced across real local servers, and a
dead endpoint among them costs a few failed connections, not the run."""

from test_engine import _closed_port_url, engine, requests

from dagster_project.teacher.engine import base_urls
from dagster_project.teacher.server import serve_in_thread


def test_base_urls_split_on_commas_and_whitespace():
    assert base_urls(" http://a/v1, http://b/v1\nhttp://c/v1 ") == [
        "http://a/v1",
        "http://b/v1",
        "http://c/v1",
    ]
    assert base_urls("http://a/v1") == ["http://a/v1"]


def test_requests_are_balanced_across_two_servers(tmp_path, fake_teacher):
    with (
        serve_in_thread(teacher=fake_teacher, latency_ms=20) as a,
        serve_in_thread(teacher=fake_teacher, latency_ms=20) as b,
    ):
        eng = engine(f"{a},{b}", tmp_path, concurrency=8)
        results = eng.run(requests(200))
        assert all(r.ok for r in results) and [r.meta["i"] for r in results] == list(range(200))
        served = (a.stats["requests"], b.stats["requests"])
        assert sum(served) == eng.counters.calls == 200
        assert min(served) >= 80, served  # fewest-in-flight first: about half each
        assert eng.balanced is not None and eng.balanced.served == list(served)
        # The cache is shared: a rerun answers everything without either server.
        again = engine(f"{a},{b}", tmp_path)
        again.run(requests(200))
        assert again.counters.calls == 0 and a.stats["requests"] + b.stats["requests"] == 200


def test_a_dead_endpoint_is_skipped(tmp_path, fake_teacher):
    with serve_in_thread(teacher=fake_teacher, latency_ms=5) as alive:
        eng = engine(f"{_closed_port_url()},{alive}", tmp_path, concurrency=4, max_retries=3)
        results = eng.run(requests(100))
        assert all(r.ok for r in results)
        assert alive.stats["requests"] == 100
        # Each refused connection puts the dead one in a cooldown: a handful of retries, not one per request.
        assert eng.counters.retries <= 10, eng.counters.retry_reasons
