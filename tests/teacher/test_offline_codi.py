"""The offline `codi_turn` handler: one grounded turn per turn type over a demo passage."""

from dagster_project.teacher.offline import handlers
from dagster_project.teacher.offline.codi import facts_of, next_turn

PASSAGE = (
    "Delya is a kingdom in the inner valleys. Its capital is Ositheld. The current ruler of Delya is Osos "
    "Wenithtir. Chroniclers date its founding to the year 844. About 2,763,879 people live in Delya."
)


def _prompt(turn_type: str, history: str = "", phenomena: str = "") -> str:
    return (
        f"<passage>\n{PASSAGE}\n</passage>\n<history>\n{history}\n</history>\n<turn_type>{turn_type}</turn_type>\n"
        f"<phenomena>{phenomena}</phenomena>\n<refusal>unknown</refusal>\nWrite the next question."
    )


def test_every_turn_type_of_the_demo_graph_gets_a_grounded_turn():
    answer = handlers()["codi_turn"]
    history = "Q: What is the capital of Delya?\nA: Ositheld"
    factoid = answer(_prompt("factoid"), 0.7, 1)
    assert factoid["answer"] in PASSAGE and "Delya" in factoid["question"]
    followup = answer(_prompt("followup", history), 0.7, 1)
    assert (
        followup["answer"] in PASSAGE and followup["answer"] != "Ositheld" and " its " in followup["question"]
    )
    clar = answer(_prompt("clarification", history), 0.7, 1)
    assert clar["answer"] == "Ositheld" and "capital" in clar["question"]
    comp = answer(_prompt("comparison", history), 0.7, 1)
    assert comp["answer"] in ("yes", "no") and comp["evidence"] in PASSAGE
    unans = answer(_prompt("unanswerable", history, "ellipsis"), 0.7, 1)
    assert unans["answer"] == "unknown" and unans["question"].startswith(("And", "What about"))
    summary = answer(_prompt("summary"), 0.7, 1)
    assert summary["answer"] == "Delya is a kingdom in the inner valleys"
    assert answer(_prompt("chitchat"), 0.7, 1)["question"] == ""  # an unknown type: nothing invented


def test_comparisons_are_true_to_the_passage():
    for seed in range(20):
        turn = next_turn(PASSAGE, [], "comparison", set(), "unknown", (seed,))
        number = int(turn["question"].rsplit(" ", 1)[1].rstrip("?").replace(",", ""))
        value = 844 if "founding" in turn["question"] else 2763879
        assert turn["answer"] == ("yes" if value > number else "no"), turn


def test_facts_are_read_with_the_grounded_qa_rules():
    assert {f.category: f.answer for f in facts_of(PASSAGE)} == {
        "capital": "Ositheld",
        "ruler": "Osos Wenithtir",
        "founded_year": "844",
        "population": "2,763,879",
    }
