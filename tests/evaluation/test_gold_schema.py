"""The gold file's schema per task kind: accepted layouts become canonical rows; anything else is named
with its line and the fix."""

import json

import pytest

from dagster_project.evaluation.gold_schema import GoldError, eval_rows, read_gold


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_official_nested_squad_document_is_flattened(tmp_path):
    doc = {
        "data": [
            {
                "title": "Ostra",
                "paragraphs": [
                    {
                        "context": "Ostra lies on the Silver River.",
                        "qas": [{"id": "q1", "question": "Where?", "answers": [{"text": "Silver River"}]}],
                    }
                ],
            }
        ]
    }
    (tmp_path / "squad.json").write_text(json.dumps(doc, indent=1))
    rows = read_gold(tmp_path / "squad.json", "qa")
    assert rows == [
        {
            "context": "Ostra lies on the Silver River.",
            "id": "q1",
            "question": "Where?",
            "answer": ["Silver River"],
            "title": "Ostra",
            "category": "all",
        }
    ]


def test_classification_needs_a_label_and_a_text(tmp_path):
    path = _write(tmp_path / "g.jsonl", [{"text": "good", "label": 1}, {"text": "bad"}])
    with pytest.raises(GoldError, match=r"g.jsonl:2: classification gold row: no label in 'label'"):
        read_gold(path, "classification")
    assert (
        read_gold(_write(tmp_path / "h.jsonl", [{"text": "t", "label": 1}]), "classification")[0]["label"]
        == "1"
    )


def test_an_explicit_reference_column_is_required_in_every_row(tmp_path):
    path = _write(tmp_path / "g.jsonl", [{"question": "q", "gold": "a"}, {"question": "q", "answer": "a"}])
    with pytest.raises(GoldError, match=r"g.jsonl:2: .*no reference column 'gold'"):
        read_gold(path, "qa", reference_column="gold")


def test_every_problem_is_listed_up_to_five_and_an_empty_file_is_an_error(tmp_path):
    path = _write(tmp_path / "g.jsonl", [{"question": "q"}] * 7)
    with pytest.raises(GoldError) as err:
        read_gold(path, "qa")
    assert str(err.value).count("qa gold row") == 5 and "... and 2 more such rows" in str(err.value)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(GoldError, match="has no rows"):
        read_gold(tmp_path / "empty.jsonl", "qa")


def test_decontamination_reads_squad_answers_and_conversation_turns(tmp_path):
    path = _write(
        tmp_path / "g.jsonl",
        [
            {"id": "a", "question": "Where?", "answers": {"text": ["Silver River"], "answer_start": [0]}},
            {"id": "b", "context": "c", "turns": [{"question": "Q1", "answer": "A1"}]},
        ],
    )
    rows = list(eval_rows(path))
    assert rows[0]["answer"] == ["Silver River"]
    assert rows[1] == {"id": "b#0", "context": "c", "question": "Q1", "answer": "A1"}
