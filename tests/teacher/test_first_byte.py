"""The first-byte limit (``DISTILL_TEACHER_FIRST_BYTE_TIMEOUT_S``) against a real local HTTP server.

One request's first try gets its response head only after 5 s; with the limit at 0.5 s that try is
aborted, counted as a "first-byte timeout" and retried, and the run finishes in well under the delay,
on every transport.
"""

import asyncio
import time

import pytest
from test_engine import requests

from dagster_project.teacher import server as server_module
from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherEngine
from dagster_project.teacher.limits import EngineLimits
from dagster_project.teacher.server import serve_in_thread

DELAY_S, LIMIT_S = 5.0, 0.5
SLOW = "in 1905."  # requests(8)[5]: sent on a reused keep-alive connection (4 in flight)


@pytest.fixture
def slow_first_answer(monkeypatch):
    """The server holds back the whole answer (head included) to the first request for the SLOW passage
    for DELAY_S, or until the client hangs up; every other request is answered at once."""
    answer = server_module.OfflineTeacherServer.chat_completions
    seen = {"requests": 0, "held": 0}  # counted on arrival: the held one's own count comes after the hold

    async def chat_completions(self, request):
        seen["requests"] += 1
        body = await request.read()  # cached by aiohttp: the handler reads it again
        if SLOW.encode() in body and not seen["held"]:
            seen["held"] += 1
            deadline = time.monotonic() + DELAY_S
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():  # the client hung up
                    break
                await asyncio.sleep(0.05)
        return await answer(self, request)

    monkeypatch.setattr(server_module.OfflineTeacherServer, "chat_completions", chat_completions)
    return seen


@pytest.mark.parametrize("transport", ["http", "aiohttp", "openai-sdk"])
def test_a_late_response_head_is_aborted_and_retried(tmp_path, fake_teacher, slow_first_answer, transport):
    reqs = requests(8)
    assert SLOW in reqs[5].messages[-1]["content"]
    with serve_in_thread(teacher=fake_teacher) as url:
        eng = TeacherEngine(
            cache=ResponseCache(tmp_path),
            env={"DISTILL_TEACHER_BASE_URL": url, "DISTILL_TEACHER_TRANSPORT": transport},
            limits=EngineLimits(concurrency=4, timeout_s=30, first_byte_timeout_s=LIMIT_S),
            progress=False,
            backoff_base_s=0.01,
        )
        start = time.perf_counter()
        results = eng.run(reqs)
        wall = time.perf_counter() - start
    assert all(r.ok for r in results) and slow_first_answer["held"] == 1  # held once, answered after
    c = eng.counters
    assert dict(c.retry_reasons) == {"first-byte timeout": 1} and c.retries == 1
    assert c.calls == slow_first_answer["requests"] == len(reqs) + 1
    assert LIMIT_S <= wall < DELAY_S / 2, wall


def test_the_first_byte_limit_is_off_by_default_and_read_from_the_environment():
    assert EngineLimits.from_env({}).first_byte_timeout_s is None
    assert EngineLimits.from_env({"DISTILL_TEACHER_FIRST_BYTE_TIMEOUT_S": "2.5"}).first_byte_timeout_s == 2.5
    with pytest.raises(ValueError, match="DISTILL_TEACHER_FIRST_BYTE_TIMEOUT_S"):
        EngineLimits.from_env({"DISTILL_TEACHER_FIRST_BYTE_TIMEOUT_S": "soon"})
