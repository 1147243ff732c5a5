"""The offline teacher's reference answers: it routes a question to the fact it asks for and reads it off."""

import json

import pytest
from helpers import REPO_ROOT

from dagster_project.teacher.offline import OfflineTeacher
from dagster_project.teacher.offline.reference import answer_question, asked_fact, facts

CONTEXT = (
    "The Delash River rises on Mount Peka. It runs for 412 km. It passes the city of Orvel. "
    "The Delash River flows into the Amber Sea."
)


@pytest.mark.parametrize(
    ("question", "kind", "answer"),
    [
        ("How long is the Delash River?", "length", "412 km"),
        ("Which city does the Delash River pass?", "city", "Orvel"),
        ("On which mountain does the Delash River begin?", "source", "Mount Peka"),
        ("The Delash River ends in which sea?", "mouth", "Amber Sea"),
    ],
)
def test_routes_the_question_to_the_fact_it_asks_for(question, kind, answer):
    assert asked_fact(question) == kind
    assert answer_question(CONTEXT, question) == answer


def test_unroutable_or_absent_fact_falls_back_or_is_empty():
    assert asked_fact("Why?") is None
    assert answer_question(CONTEXT, "Why?") == ""
    assert answer_question("Nothing to read here.", "How long is the Delash River?") == ""


def test_answers_through_the_teacher_by_prompt_name():
    text = f"<context>\n{CONTEXT}\n</context>\nQuestion: How long is the Delash River?\nReturn JSON."
    out = OfflineTeacher().chat([{"role": "user", "content": text}], prompt="reference_answer")
    assert json.loads(out["content"]) == {"answer": "412 km"}


def test_demo_gold_set_and_training_questions():
    """The demo's held-out questions are phrased unlike the synthesis templates the rules know; the
    router must still find the fact (a real measurement, not the empty answer)."""
    gold = [json.loads(line) for line in (REPO_ROOT / "data/demo_world/gold_test.jsonl").open()]
    routed = sum(asked_fact(r["question"]) == r["category"] for r in gold)
    told = sum(next(s for k, s in facts(r["context"]) if k == r["category"]) == r["answer"] for r in gold)
    exact = sum(answer_question(r["context"], r["question"]) == r["answer"] for r in gold)
    assert told == len(gold)  # told the fact kind, the rules find the span every time
    assert routed >= 0.9 * len(gold) and exact >= 0.9 * len(gold), (routed, exact)
