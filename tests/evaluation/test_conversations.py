"""The multi-turn gold loader: CoQA (official and Hugging Face layouts), QuAC (both) and canonical rows
become one shape, with CoQA's "unknown" and QuAC's "CANNOTANSWER" as the recipe's refusal."""

import json

import pytest

from dagster_project.evaluation.conversations import load_conversations
from dagster_project.evaluation.gold_schema import GoldError, read_gold

STORY = "Anzanan is a kingdom. Its capital is Kordel. It is ruled by Ashan Elddra."
COQA = {
    "version": "1.0",
    "data": [
        {
            "id": "c1",
            "story": STORY,
            "questions": [
                {"input_text": "What is Anzanan?", "turn_id": 1, "turn_type": "factoid"},
                {"input_text": "its capital?", "turn_id": 2},
                {"input_text": "who founded it?", "turn_id": 3},
            ],
            "answers": [
                {"input_text": "a kingdom", "span_text": "a kingdom", "turn_id": 1},
                {"input_text": "Kordel", "turn_id": 2},
                {"input_text": "unknown", "turn_id": 3},
            ],
            "additional_answers": {
                "0": [{"input_text": "kingdom"}, {"input_text": "Kordel city"}, {"input_text": "unknown"}]
            },
        }
    ],
}


def test_a_coqa_official_file(tmp_path):
    path = tmp_path / "coqa.json"
    path.write_text(json.dumps(COQA, indent=1))
    [conv] = load_conversations(path, refusal="not stated")
    assert conv["id"] == "c1" and conv["context"] == STORY
    assert [t["question"] for t in conv["turns"]] == ["What is Anzanan?", "its capital?", "who founded it?"]
    assert conv["turns"][0]["answers"] == ["a kingdom", "kingdom"]
    assert conv["turns"][1]["answers"] == ["Kordel", "Kordel city"]
    assert conv["turns"][2]["answers"] == ["not stated", "not stated"]
    assert [t["turn_type"] for t in conv["turns"]] == ["factoid", "", ""]
    # the evaluate stage's multi_turn_qa task reads the same file
    [row] = read_gold(path, "multi_turn_qa")
    assert row["context"] == STORY and [t["answer"] for t in row["turns"]] == [
        "a kingdom",
        "Kordel",
        "unknown",
    ]


def test_coqa_and_quac_hugging_face_rows_and_canonical_rows(tmp_path):
    rows = [
        {
            "id": "h1",
            "story": STORY,
            "questions": ["What is it?", "capital?"],
            "answers": {"input_text": ["a kingdom", "Kordel"]},
        },
        {
            "id": "q1",
            "context": STORY + " CANNOTANSWER",
            "questions": ["ruler?", "founded?"],
            "orig_answers": {"texts": ["Ashan Elddra", "CANNOTANSWER"]},
            "answers": {"texts": [["Ashan Elddra"], ["CANNOTANSWER"]]},
        },
        {
            "id": "k1",
            "context": STORY,
            "turns": [{"question": "capital?", "answer": ["Kordel"], "turn_type": "factoid"}],
        },
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    coqa, quac, canon = load_conversations(path)
    assert [t["answers"] for t in coqa["turns"]] == [["a kingdom"], ["Kordel"]]
    assert quac["context"] == STORY
    assert [t["answers"] for t in quac["turns"]] == [["Ashan Elddra", "Ashan Elddra"], ["unknown", "unknown"]]
    assert canon["turns"][0]["turn_type"] == "factoid"


def test_a_quac_official_file(tmp_path):
    doc = {
        "data": [
            {
                "paragraphs": [
                    {
                        "id": "p1",
                        "context": STORY + " CANNOTANSWER",
                        "qas": [
                            {
                                "question": "Who rules?",
                                "orig_answer": {"text": "Ashan Elddra"},
                                "answers": [{"text": "Ashan Elddra"}],
                            },
                            {
                                "question": "Founded when?",
                                "orig_answer": {"text": "CANNOTANSWER"},
                                "answers": [{"text": "CANNOTANSWER"}],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    path = tmp_path / "quac.json"
    path.write_text(json.dumps(doc, indent=1))
    [conv] = load_conversations(path)
    assert conv["context"] == STORY and conv["turns"][1]["answers"] == ["unknown", "unknown"]


def test_a_row_that_is_no_conversation_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"context": STORY, "turns": [{"question": "q", "answer": ""}]}) + "\n")
    with pytest.raises(GoldError, match=r"bad.jsonl:1: not a conversation"):
        load_conversations(path)
