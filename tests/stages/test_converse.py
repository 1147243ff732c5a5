"""The converse kind (CoDi): conversations sampled from the graph and synthesized turn by turn by the
offline teacher, every answer checked against its passage; a bad spec fails before any work."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from dagster_project.stages import converse
from dagster_project.stages.converse import check_answer
from dagster_project.student.conversation import expand_conversations
from dagster_project.teacher.mapping import is_verbatim_span

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "examples" / "codi"


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    shutil.copytree(RECIPE / "prompts", tmp_path / "prompts")
    rows = [
        json.loads(line) for line in (REPO / "data/demo_world/passages.jsonl").read_text().splitlines()[:12]
    ]
    pl.DataFrame({"passage_id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}).write_parquet(
        tmp_path / "grounding.parquet"
    )
    params = {"converse": {"spec": "prompts/graph.yaml", "conversations": 30, "seed": 3, "val_fraction": 0.2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILL_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path


def _run(root: Path, out: str = "out") -> Path:
    converse.main(
        [
            "--params",
            str(root / "params.yaml"),
            "--input",
            str(root / "grounding.parquet"),
            "--out",
            str(root / out),
        ]
    )
    return root / out


def test_conversations_store_path_turn_types_and_phenomena_and_every_answer_is_grounded(recipe):
    out = _run(recipe)
    conv = pl.read_parquet(out / "conversations.parquet").to_dicts()
    stats = json.loads((out / "stats.json").read_text())
    assert len(conv) == stats["n_conversations"] > 20
    assert pl.read_parquet(out / "train.parquet").height + pl.read_parquet(out / "val.parquet").height == len(
        conv
    )
    for c in conv:
        assert 2 <= c["n_turns"] <= 6 and c["turn_types"] == c["path"][: c["n_turns"]]
        assert c["stopped"] or c["turn_types"] == c["path"]
        for turn in c["turns"]:
            kind = turn["turn_type"]
            assert isinstance(turn["phenomena"], list)
            if kind == "unanswerable":
                assert turn["answer"] == "unknown" and not is_verbatim_span(turn["question"], c["context"])
            elif kind == "comparison":
                assert turn["answer"] in ("yes", "no") and is_verbatim_span(turn["evidence"], c["context"])
            else:
                assert is_verbatim_span(turn["answer"], c["context"]), turn
        first = c["turns"][0]
        assert "coreference" not in first["phenomena"] and "ellipsis" not in first["phenomena"]
    types = {t for c in conv for t in c["turn_types"]}
    assert types == {"factoid", "followup", "clarification", "comparison", "unanswerable", "summary"}
    turns = pl.read_parquet(out / "turns" / "train.parquet")
    assert set(turns.columns) == {"context", "question", "answer", "turn", "turn_type"}
    # the same seed gives the same conversations (the teacher's answers come from its cache or again)
    again = pl.read_parquet(_run(recipe, "again") / "conversations.parquet")
    assert again.equals(pl.read_parquet(out / "conversations.parquet"))


def test_a_bad_spec_fails_before_any_work_naming_the_node(recipe, capsys):
    spec = yaml.safe_load((recipe / "prompts/graph.yaml").read_text())
    spec["nodes"]["followup"]["next"]["end"] = 0.5  # the row now sums to 1.3
    spec["nodes"]["summary"]["next"] = {"factoid": 0.5, "recap": 0.5}
    del spec["nodes"]["comparison"]["augmentation"]
    (recipe / "prompts/graph.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as exc:
        _run(recipe)
    assert exc.value.code == 2
    message = capsys.readouterr().err
    assert (
        "converse.spec: prompts/graph.yaml: nodes.followup.next: probabilities sum to 1.3, not 1" in message
    )
    assert "nodes.summary.next: unknown node 'recap'" in message
    assert "nodes.comparison: missing prompt" in message
    assert not (recipe / "out").exists() and not (recipe / "cache").exists()  # no teacher call, no output
    # `distill check` runs the same validation through the params model
    problems = converse.Params(spec="prompts/graph.yaml").check_files(recipe, "converse")
    assert any("converse.spec: " in p and "probabilities sum to 1.3" in p for p in problems)


def test_answers_are_checked_by_the_node_answer_kind():
    passage = "Delya is a kingdom in the inner valleys. Its capital is Ositheld."
    assert check_answer("span", {"answer": "Ositheld"}, passage, "unknown") is None
    assert check_answer("span", {"answer": "Osithel d"}, passage, "unknown") == "answer_not_in_passage"
    assert check_answer("span", {"answer": "Unknown."}, passage, "unknown") == "refused_answerable"
    assert check_answer("refusal", {"answer": "Ositheld"}, passage, "unknown") == "not_refused"
    assert check_answer("refusal", {"answer": "unknown"}, passage, "unknown") is None
    yes = {"answer": "yes", "evidence": "Its capital is Ositheld."}
    assert check_answer("yes_no", yes, passage, "unknown") is None
    assert (
        check_answer("yes_no", {**yes, "evidence": "It has a capital."}, passage, "unknown")
        == "evidence_not_in_passage"
    )
    para = {
        "answer": "a kingdom, in the inner valleys",
        "evidence": "Delya is a kingdom in the inner valleys.",
    }
    assert check_answer("evidence", para, passage, "unknown") is None
    made_up = {**para, "answer": "a kingdom in the outer valleys"}
    assert check_answer("evidence", made_up, passage, "unknown") == "answer_not_in_evidence"


def test_expanded_turns_carry_the_history_as_evaluate_asks_it():
    from dagster_project.evaluation.tasks import MultiTurnQA

    conv = {
        "context": "P.",
        "turns": [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}],
    }
    rows = expand_conversations([conv])
    items = MultiTurnQA([]).items([conv])
    assert [r["context"] for r in rows] == [it["context"] for it in items] == ["P.", "P.\nQ: q1 A: a1"]
