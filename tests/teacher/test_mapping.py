"""The teacher primitive: a prompt mapped over rows gives validated rows, declared checks and every reject."""

import json
import socket

import pytest

from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherEngine, TeacherUnreachableError
from dagster_project.teacher.mapping import build_requests, collect, map_prompt
from dagster_project.teacher.prompts import load_prompt

PROMPT = """\
name: pairs_demo
messages:
  - {role: user, content: "<passage>{{ passage }}</passage> <count>{{ count }}</count>"}
output_schema:
  type: object
  required: [pairs]
  properties:
    pairs: {type: array, items: {type: object, required: [question, answer]}}
output:
  explode: pairs
  checks:
    - {check: span, column: answer, of: passage, reason: answer_not_in_passage}
    - {check: not_matching, column: question, pattern: "(?i)as an ai", reason: refusal}
    - {check: unique, columns: [passage_id, question]}
"""


class ScriptedTeacher:
    """Answers each passage with four pairs: one good, one off-passage, one repeat, one refusal."""

    def chat(self, messages, *, model="offline-teacher", temperature=0.0, seed=None, max_tokens=None):
        passage = messages[-1]["content"].split("<passage>")[1].split("</passage>")[0]
        first = passage.split()[0]
        pairs = [
            {"question": "First word?", "answer": f" {first} "},
            {"question": "Sky?", "answer": "blue"},
            {"question": "First word?", "answer": first},
            {"question": "As an AI I cannot say?", "answer": first},
        ]
        return {"content": json.dumps({"pairs": pairs}), "finish_reason": "stop", "usage": {}}


@pytest.fixture
def prompt(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROMPT)
    return load_prompt(path)


def _engine(tmp_path, teacher):
    return TeacherEngine(teacher=teacher, cache=ResponseCache(tmp_path / "cache"), progress=False)


ROWS = [
    {"passage_id": "p1", "text": "Alice founded Brightwater."},
    {"passage_id": "p2", "text": "Eastport is big."},
]


def test_rows_carry_columns_and_every_failed_check_is_a_reject(tmp_path, prompt):
    requests = build_requests(
        prompt, ROWS, model="offline-teacher", variables={"passage": "text"}, constants={"count": 4}
    )
    with _engine(tmp_path, ScriptedTeacher()) as engine:
        result = map_prompt(engine, prompt, requests, carry={"passage_id": "passage_id"})
    assert [(r["passage_id"], r["answer"]) for r in result.rows] == [("p1", "Alice"), ("p2", "Eastport")]
    assert all(r["request_id"] for r in result.rows)  # answers are stripped, ids kept
    assert result.reject_reasons == {
        "answer_not_in_passage": 2,
        "duplicate_passage_id_question": 2,
        "refusal": 2,
    }
    assert {r["passage_id"] for r in result.rejects} == {"p1", "p2"} and result.n_requests == 2
    assert len(result.rows) + len(result.rejects) == 8  # every answer accounted for


def test_a_missing_column_names_it(prompt):
    with pytest.raises(KeyError, match=r"no column\(s\) \['body'\]"):
        build_requests(
            prompt, ROWS, model="offline-teacher", variables={"passage": "body"}, constants={"count": 1}
        )


def test_samples_and_seed_by_give_independent_requests(prompt):
    same = [{"id": "a", "text": "x y"}, {"id": "b", "text": "x y"}]
    plain = build_requests(
        prompt, same, model="offline-teacher", variables={"passage": "text"}, constants={"count": 1}, seed=0
    )
    assert plain[0].request_id == plain[1].request_id  # identical prompts are one cached answer
    seeded = build_requests(
        prompt,
        same,
        model="offline-teacher",
        variables={"passage": "text"},
        constants={"count": 1},
        seed=0,
        seed_by=["id"],
    )
    assert seeded[0].request_id != seeded[1].request_id
    kw = {"model": "offline-teacher", "variables": {"passage": "text"}, "constants": {"count": 1}, "seed": 0}
    again = build_requests(prompt, same[1:], seed_by=["id"], **kw)
    assert again[0].request_id == seeded[1].request_id  # a row's seed does not depend on the other rows
    many = build_requests(prompt, same[:1], samples=3, **kw)
    assert len({r.request_id for r in many}) == 3


def test_engine_rejects_become_rejects_and_an_outage_raises(tmp_path, prompt):
    class Broken:
        def chat(self, messages, **kwargs):
            return {"content": "not json", "finish_reason": "stop", "usage": {}}

    requests = build_requests(
        prompt, ROWS[:1], model="offline-teacher", variables={"passage": "text"}, constants={"count": 1}
    )
    with _engine(tmp_path, Broken()) as engine:
        result = map_prompt(engine, prompt, requests, carry={"passage_id": "passage_id"})
    assert result.rows == [] and result.rejects and all(r["passage_id"] == "p1" for r in result.rejects)

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    env = {"DISTILL_TEACHER_BASE_URL": url}
    down = TeacherEngine(
        env=env,
        cache=ResponseCache(tmp_path / "b"),
        max_retries=1,
        backoff_base_s=0.01,
        unreachable_after_s=0.0,
    )
    with down, pytest.raises(TeacherUnreachableError):
        map_prompt(down, prompt, requests)


def test_collect_without_explode_makes_one_row_per_answer(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(
        "name: one\nmessages: [{role: user, content: '{{ x }}'}]\n"
        "output_schema: {type: object, required: [text], properties: {text: {type: string}}}\n"
        "output: {checks: [{check: min_words, column: text, value: 2}]}\n"
    )
    prompt = load_prompt(path)

    class Echo:
        def chat(self, messages, **kwargs):
            return {
                "content": json.dumps({"text": messages[-1]["content"]}),
                "finish_reason": "stop",
                "usage": {},
            }

    requests = build_requests(
        prompt, [{"x": "two words"}, {"x": "one"}], model="offline-teacher", variables={"x": "x"}
    )
    with _engine(tmp_path, Echo()) as engine:
        rows, rejects = collect(prompt, engine.run(requests), carry={"x": "x"})
    assert [r["text"] for r in rows] == ["two words"] and [r["reason"] for r in rejects] == ["text_min_words"]


def test_an_answer_with_nothing_to_explode_is_a_reject(tmp_path, prompt):
    class Empty:
        def chat(self, messages, **kwargs):
            return {"content": json.dumps({"pairs": []}), "finish_reason": "stop", "usage": {}}

    requests = build_requests(prompt, ROWS, model="offline-teacher", variables={"passage": "text"},
                              constants={"count": 1})  # fmt: skip
    with _engine(tmp_path, Empty()) as engine:
        result = map_prompt(engine, prompt, requests, carry={"passage_id": "passage_id"})
    assert result.rows == [] and result.reject_reasons == {"empty_pairs": 2}
