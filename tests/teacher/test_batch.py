"""The Batch API path against the local server: answers land in the cache, a restart resumes the batch."""

import json

import pytest
from test_engine import FAST, requests

from dagster_project.teacher import batch as batch_mod
from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherEngine
from dagster_project.teacher.prices import Price, PriceTable
from dagster_project.teacher.server import serve_in_thread


def batch_engine(url: str, cache_dir) -> TeacherEngine:
    env = {
        "DISTILL_TEACHER_BASE_URL": url,
        "DISTILL_TEACHER_BATCH": "1",
        "DISTILL_TEACHER_BATCH_POLL_S": "0.05",
    }
    prices = PriceTable({"teacher-model": Price(1000.0, 1000.0)}, batch_discount=0.5)
    return TeacherEngine(cache=ResponseCache(cache_dir), env=env, prices=prices, **FAST)


def test_batch_answers_fill_the_cache_then_the_run_makes_no_calls(tmp_path, fake_teacher):
    with serve_in_thread(teacher=fake_teacher, batch_delay_s=0.1) as url:
        eng = batch_engine(url, tmp_path)
        results = eng.run(requests(25))
        stats = dict(url.stats)
    assert all(r.ok for r in results)
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 25
    assert stats.get("requests", 0) == 0  # no synchronous chat call
    c = eng.counters
    assert c.batched == 25 and c.calls == 0 and c.cache_hits == 25
    full = (c.tokens_in + c.tokens_out) * 1000 / 1e6
    assert c.cost_usd == pytest.approx(full * 0.5)  # batch price
    assert not list((tmp_path / "batches").glob("*.json"))  # state removed once done


def test_a_restart_resumes_the_persisted_batch(tmp_path, fake_teacher, monkeypatch):
    with serve_in_thread(teacher=fake_teacher, batch_delay_s=0.3) as url:
        # First process: dies while polling, after the batch was created.
        def die(_seconds):
            raise KeyboardInterrupt

        monkeypatch.setattr(batch_mod.time, "sleep", die)
        with pytest.raises(KeyboardInterrupt):
            batch_engine(url, tmp_path).run(requests(10))
        [state_file] = (tmp_path / "batches").glob("*.json")
        assert json.loads(state_file.read_text())["batch_id"] == "batch-1"
        monkeypatch.undo()
        # Second process: the same job resumes batch-1 instead of paying for another.
        eng = batch_engine(url, tmp_path)
        results = eng.run(requests(10))
        stats = dict(url.stats)
    assert all(r.ok for r in results)
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 10
    assert eng.counters.batched == 10 and eng.counters.calls == 0
