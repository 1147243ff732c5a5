import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dagster_project.teacher.cache import CacheMissError, ResponseCache
from dagster_project.teacher.engine import (
    TeacherConfigError,
    TeacherEngine,
    TeacherRequest,
    TeacherUnreachableError,
)
from dagster_project.teacher.prompts import load_prompt
from dagster_project.teacher.server import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
PROMPT = load_prompt(REPO / "prompts" / "grounded_qa.yaml")
FAST = {"backoff_base_s": 0.01, "timeout_s": 5.0, "progress": False}


def requests(n: int, model: str = "teacher-model") -> list[TeacherRequest]:
    return [
        TeacherRequest.from_prompt(
            PROMPT,
            model=model,
            seed=0,
            passage=f"Alice moved to Paris in {1900 + i}.",
            count=2,
            meta={"i": i},
        )
        for i in range(n)
    ]


def engine(url: str, cache_dir: Path, **kwargs) -> TeacherEngine:
    options = {**FAST, **kwargs}
    return TeacherEngine(cache=ResponseCache(cache_dir), env={"DISTILL_TEACHER_BASE_URL": url}, **options)


def test_clean_run_then_cache_makes_zero_calls(tmp_path, fake_teacher):
    reqs = requests(20)
    with serve_in_thread(teacher=fake_teacher) as url:
        first = engine(url, tmp_path)
        results = first.run(reqs)
        assert all(r.ok for r in results) and [r.meta["i"] for r in results] == list(range(20))
        assert first.counters.calls == 20 and first.counters.tokens_out == 20 * 14
        second = engine(url, tmp_path)
        again = second.run(reqs)
        assert second.counters.calls == 0 and second.counters.cache_hits == 20
        assert [r.value for r in again] == [r.value for r in results]
        assert url.stats["requests"] == 20


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("rate_html", "html_body"),
        ("rate_malformed", "malformed_json"),
        ("rate_truncate", "truncated"),
        ("rate_refusal", "refusal"),
    ],
)
def test_bad_answers_are_retried_and_explained(tmp_path, fake_teacher, fault, reason):
    reqs = requests(30)
    with serve_in_thread(teacher=fake_teacher, **{fault: 0.4}) as url:
        eng = engine(url, tmp_path, max_attempts=2)
        results = eng.run(reqs)
        injected = url.stats[fault.removeprefix("rate_")]
    assert len(results) == 30  # nothing dropped
    rejects = [rej for r in results for rej in r.rejects]
    assert injected > 0 and len(rejects) == injected
    assert {rej.reason for rej in rejects} == {reason}
    assert eng.counters.rejects == {reason: injected}
    failed = [r for r in results if not r.ok]
    assert all(r.reason == reason and len(r.rejects) == 2 for r in failed)
    assert sum(r.ok for r in results) == 30 - len(failed)
    assert eng.counters.calls == 30 + sum(len(r.rejects) for r in results if r.ok) + len(failed)


@pytest.mark.parametrize("fault", ["rate_429", "rate_500", "rate_hang"])
def test_transient_errors_are_retried(tmp_path, fake_teacher, fault):
    extra = {"hang_s": 3.0} if fault == "rate_hang" else {}
    with serve_in_thread(teacher=fake_teacher, **{fault: 0.3}, **extra) as url:
        eng = engine(url, tmp_path, timeout_s=1.0)
        results = eng.run(requests(20))
        injected = url.stats[fault.removeprefix("rate_")]
    assert all(r.ok for r in results)
    assert injected > 0 and eng.counters.retries == injected
    assert eng.counters.calls == 20 + injected


def _closed_port_url() -> str:
    """The URL of a port nothing listens on: every connection is refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_dead_endpoint_trips_the_breaker_instead_of_retrying_every_request(tmp_path):
    eng = engine(_closed_port_url(), tmp_path, max_retries=1, backoff_base_s=0.01, unreachable_after_s=0.3)
    start = time.perf_counter()
    with pytest.raises(TeacherUnreachableError, match="has not answered for"):
        eng.run(requests(2000))
    # Without the breaker every request would be taken and tried 3 attempts x 2 tries (12,000 calls);
    # with it the run stops soon after 0.3 s of silence, before it has even taken every request.
    assert eng.counters.requests < 2000 and eng.counters.calls < 12000 and time.perf_counter() - start < 30


def test_error_statuses_count_as_answers_for_the_breaker(tmp_path, fake_teacher):
    with serve_in_thread(teacher=fake_teacher, rate_500=1.0) as url:
        eng = engine(url, tmp_path, max_retries=1, max_attempts=1, unreachable_after_s=0.0)
        results = eng.run(requests(3))  # a 500 is an answer: the endpoint is up, the requests are rejected
    assert [r.reason for r in results] == ["unavailable: http 500 after 1 retries"] * 3


def test_retry_after_is_honoured(tmp_path, fake_teacher):
    with serve_in_thread(teacher=fake_teacher, rate_429=0.5, retry_after_s=0.3) as url:
        eng = engine(url, tmp_path, concurrency=1)
        start = time.perf_counter()
        eng.run(requests(4))
        n429 = url.stats["429"]
    assert n429 > 0 and time.perf_counter() - start >= 0.3 * n429


def test_exhausted_retries_become_rejects(tmp_path, fake_teacher):
    with serve_in_thread(teacher=fake_teacher, rate_500=1.0) as url:
        eng = engine(url, tmp_path, max_retries=2, max_attempts=2)
        results = eng.run(requests(3))
    assert not any(r.ok for r in results)
    assert all(r.reason.startswith("unavailable: http 500") for r in results)
    assert eng.counters.calls == 3 * 2 * 3 and eng.counters.rejects == {"unavailable": 6}
    assert len(ResponseCache(tmp_path)) == 0  # failures are not cached: the next run tries again


def test_replay_mode_miss_is_a_clear_error(tmp_path, fake_teacher):
    with serve_in_thread(teacher=fake_teacher) as url:
        engine(url, tmp_path).run(requests(2))
        replay = TeacherEngine(
            cache=ResponseCache(tmp_path, "replay"), env={"DISTILL_TEACHER_BASE_URL": url}, **FAST
        )
        assert all(r.ok for r in replay.run(requests(2)))
        with pytest.raises(CacheMissError, match="replay mode.*teacher-model"):
            replay.run(requests(3))


def test_offline_in_process_uses_same_path(tmp_path, fake_teacher):
    eng = TeacherEngine(cache=ResponseCache(tmp_path), env={}, teacher=fake_teacher, **FAST)
    results = eng.run(requests(3, model="offline-teacher"))
    assert all(r.ok for r in results) and eng.counters.calls == 3 and eng.backend_kind == "offline"


def test_real_offline_teacher(tmp_path):
    pytest.importorskip("dagster_project.teacher.offline")
    eng = TeacherEngine(cache=ResponseCache(tmp_path), env={}, **FAST)
    [result] = eng.run(requests(1, model="offline-teacher"))
    assert result.ok, result.reason


def test_other_model_without_endpoint_says_what_to_set(tmp_path):
    eng = TeacherEngine(cache=ResponseCache(tmp_path), env={}, **FAST)
    with pytest.raises(TeacherConfigError, match="DISTILL_TEACHER_BASE_URL"):
        eng.run(requests(1, model="gpt-x"))


def test_kill_minus_9_loses_only_in_flight(tmp_path, fake_teacher):
    """A run killed mid-way keeps every finished response: the rerun hits them all."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[3])
        from test_engine import engine, requests
        engine(sys.argv[1], sys.argv[2], concurrency=4).run(requests(200))
        """
    )
    with serve_in_thread(teacher=fake_teacher, latency_ms=20) as url:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, url, str(tmp_path), str(Path(__file__).parent)], env=env
        )
        deadline = time.monotonic() + 120
        while url.stats["requests"] < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = len(ResponseCache(tmp_path))
        assert 0 < finished < 200
        rerun = engine(url, tmp_path)
        results = rerun.run(requests(200))
    assert all(r.ok for r in results)
    assert rerun.counters.cache_hits == finished and rerun.counters.calls == 200 - finished


@pytest.mark.parametrize("transport", ["http", "aiohttp", "openai-sdk"])
def test_every_fault_at_once_is_counted_and_explained(tmp_path, fake_teacher, transport):
    """All faults together: the run completes, every failure is counted with its reason, nothing is lost."""
    faults = {
        "rate_429": 0.08,
        "rate_500": 0.08,
        "rate_hang": 0.04,
        "rate_html": 0.05,
        "rate_malformed": 0.05,
        "rate_truncate": 0.05,
        "rate_refusal": 0.05,
    }
    with serve_in_thread(teacher=fake_teacher, hang_s=4.0, retry_after_s=0.05, **faults) as url:
        env = {"DISTILL_TEACHER_BASE_URL": url, "DISTILL_TEACHER_TRANSPORT": transport}
        eng = TeacherEngine(
            cache=ResponseCache(tmp_path), env=env, **{**FAST, "timeout_s": 1.5, "max_retries": 10}
        )
        results = eng.run(requests(80))
        served = dict(url.stats)
    assert len(results) == 80 and [r.meta["i"] for r in results] == list(range(80))
    c = eng.counters
    # Transient failures: each retried, each counted under its reason.
    assert c.retry_reasons == {
        k: v for k, v in {"http 429": served.get("429", 0), "http 500": served.get("500", 0)}.items() if v
    } | ({"timeout": served["hang"]} if served.get("hang") else {})
    assert c.rate_limited == served.get("429", 0)
    # Bad answers: each a reject with its reason, on the result and in the counters.
    expected = {
        reason: served[fault]
        for fault, reason in [
            ("html", "html_body"),
            ("malformed", "malformed_json"),
            ("truncate", "truncated"),
            ("refusal", "refusal"),
        ]
        if served.get(fault)
    }
    assert dict(c.rejects) == expected
    assert sum(len(r.rejects) for r in results) == sum(expected.values())
    for r in results:
        assert (r.ok and r.value["pairs"]) or (not r.ok and r.reason and len(r.rejects) == 3)
    assert c.calls == served["requests"]
    # Nothing finished is lost: a rerun is served from the cache, with the same outcome.
    again = TeacherEngine(cache=ResponseCache(tmp_path), env=env, **FAST)
    rerun = again.run(requests(80))
    assert again.counters.calls == 0  # rejected answers are cached too: the rerun replays them
    assert [(r.ok, r.value, r.reason) for r in rerun] == [(r.ok, r.value, r.reason) for r in results]


def test_progress_bar_shows_rate_tokens_and_cost(tmp_path, fake_teacher, capsys):
    from dagster_project.teacher.prices import Price, PriceTable

    prices = PriceTable({"teacher-model": Price(1.0, 2.0)})
    with serve_in_thread(teacher=fake_teacher) as url:
        env = {"DISTILL_TEACHER_BASE_URL": url}
        options = {**FAST, "progress": True}
        eng = TeacherEngine(cache=ResponseCache(tmp_path), env=env, prices=prices, **options)
        eng.run(requests(5))
    err = capsys.readouterr().err
    assert "req/s" in err and "5/5" in err
    assert "tok_out=70" in err and "cost=$0.0003" in err and "calls=5" in err


def test_structured_output_sends_the_schema_only_when_enabled(tmp_path):
    from dagster_project.teacher.cache import request_key
    from dagster_project.teacher.wire import request_body as _request_body

    [req] = requests(1)
    plain = TeacherEngine(cache=ResponseCache(tmp_path), env={}, **FAST)
    strict = TeacherEngine(
        cache=ResponseCache(tmp_path), env={"DISTILL_TEACHER_STRUCTURED_OUTPUT": "1"}, **FAST
    )
    assert "response_format" not in _request_body(plain._payload(req, 0))
    assert request_key(plain._payload(req, 0)) == request_key(req.payload(0))  # old cache keys unchanged
    body = _request_body(strict._payload(req, 0))
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == PROMPT.output_schema


def test_offline_revision_is_the_source_of_the_prompts_own_handler() -> None:
    """A handler's answers are keyed by its own source (its module, what it imports, the core), so one
    recipe's new or edited handler leaves every other prompt's cache keys and outputs as they were."""
    from dagster_project.teacher.offline import _module_closure, revision

    assert _module_closure("__init__") == ["__init__", "grounded_qa"]
    assert _module_closure("reference") == ["__init__", "grounded_qa", "judges", "reference"]
    assert "codi" not in _module_closure("critic") and "critic" not in _module_closure("codi")
    assert revision("grounded_qa") == revision(None) == revision("no such prompt")
    assert len({revision("grounded_qa"), revision("reference_answer"), revision("humor_paraphrase")}) == 3


def test_offline_teacher_revision_is_part_of_the_cache_key_only() -> None:
    from dagster_project.teacher.cache import request_key
    from dagster_project.teacher.engine import OFFLINE_MODEL, TeacherRequest
    from dagster_project.teacher.offline import revision
    from dagster_project.teacher.wire import request_body as _request_body

    messages = [{"role": "user", "content": "hi"}]
    offline = TeacherRequest(messages=messages, model=OFFLINE_MODEL)
    assert offline.payload(0)["revision"] == revision(offline.prompt_name)
    older = TeacherRequest(messages=messages, model=OFFLINE_MODEL, revision="0")
    assert request_key(offline.payload(0)) != request_key(older.payload(0))  # new rules, new answers
    assert "revision" not in _request_body(offline.payload(0))  # never sent to an endpoint
    assert "revision" not in TeacherRequest(messages=messages, model="gpt-4o").payload(0)  # keys unchanged
