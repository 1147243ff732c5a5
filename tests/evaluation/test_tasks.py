"""Task kinds of the evaluate stage (one class each, in one registry), the report and the plot files, on
small hand-computed inputs."""

import json
import math
from pathlib import Path

import polars as pl
import pytest

from dagster_project.evaluation import charts as report
from dagster_project.evaluation.diversity import diversity_figures
from dagster_project.evaluation.report import plot_files, render_report, report_sections, write_outputs
from dagster_project.evaluation.scoring import score_systems
from dagster_project.evaluation.tasks import (
    DEFAULT_CLASSIFICATION_QUESTION,
    TASKS,
    Classification,
    FreeText,
    Task,
    score_free_text,
    task_class,
)
from dagster_project.evaluation.teacher import teacher_answers, teacher_judge

REPO_ROOT = Path(__file__).resolve().parents[2]


def expand_items(rows, task, **kwargs):  # noqa: ANN001, ANN003, ANN201
    return task_class(task)(**kwargs).items(rows)


def summarize(task, predictions, items, labels=(), judge=None, n_resamples=1000, seed=0):  # noqa: ANN001, ANN201
    return task_class(task)(labels, judge, n_resamples=n_resamples, seed=seed).score(predictions, items)


def test_one_registry_of_task_classes():
    assert list(TASKS) == ["qa", "multi_turn_qa", "classification", "free_text", "cot_answer"]
    assert all(issubclass(cls, Task) and cls.name == name for name, cls in TASKS.items())
    with pytest.raises(ValueError, match="unknown task 'ner'"):
        task_class("ner")


def test_qa_items_and_scores():
    rows = [
        {"id": "a", "context": "c1", "question": "q1", "answer": "Paris", "category": "city"},
        {"id": "b", "context": "c2", "question": "q2", "answer": ["the red fox", "fox"]},
    ]
    items = expand_items(rows, "qa")
    assert [it["category"] for it in items] == ["city", "all"]
    headline, per_item = summarize("qa", ["paris", "red dog"], items)
    # item 1: exact (normalised). item 2: "red dog" vs "red fox" -> P = R = 1/2, F1 0.5; vs "fox" -> 0.
    assert per_item[0] == {"exact_match": 1.0, "token_f1": 1.0, "score": 1.0}
    assert per_item[1]["token_f1"] == pytest.approx(0.5) and per_item[1]["exact_match"] == 0.0
    assert headline == {"exact_match": 0.5, "token_f1": pytest.approx(0.75)}


def test_multi_turn_items_carry_the_gold_history():
    rows = [
        {
            "id": "conv",
            "context": "Ann lives in Rome. She is 30.",
            "turns": [
                {"question": "Where does Ann live?", "answer": "Rome"},
                {"question": "Age?", "answer": "30"},
            ],
        }
    ]
    items = expand_items(rows, "multi_turn_qa")
    assert [it["turn"] for it in items] == [0, 1]
    assert items[0]["context"] == "Ann lives in Rome. She is 30."
    assert items[1]["context"] == "Ann lives in Rome. She is 30.\nQ: Where does Ann live? A: Rome"
    headline, per_item = summarize("multi_turn_qa", ["Rome", "thirty"], items)
    assert [p["token_f1"] for p in per_item] == [1.0, 0.0]
    assert headline == {"exact_match": 0.5, "token_f1": 0.5, "n_turns": 2, "n_conversations": 1}


def test_classification_maps_label_words():
    rows = [
        {"text": "great film", "label": "positive"},
        {"text": "awful", "label": "negative"},
        {"text": "meh", "label": "negative"},
        {"text": "fine", "label": "positive"},
    ]
    items = expand_items(rows, "classification")
    assert items[0]["question"] == DEFAULT_CLASSIFICATION_QUESTION
    generated = ["Positive!", "positive", "it is negative", "no idea"]
    headline, per_item = summarize("classification", generated, items, labels=["positive", "negative"])
    # mapped: positive, positive, negative, <invalid>; correct: 1, 0, 1, 0.
    assert [p["label"] for p in per_item] == ["positive", "positive", "negative", "<invalid>"]
    assert headline["accuracy"] == 0.5 and headline["invalid_rate"] == 0.25
    # positive: TP 1, FP 1, FN 1 -> P = R = F1 = 0.5; negative: TP 1, FP 0, FN 1 -> P 1, R 0.5, F1 2/3.
    assert headline["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert headline["_details"]["confusion"]["counts"] == [[1, 0, 1], [1, 1, 0]]
    with pytest.raises(ValueError):
        summarize("classification", generated, items, labels=[])


def test_free_text_success_rate_with_interval():
    summary, per_item = score_free_text([True, True, False, None], n_resamples=500, seed=1)
    assert summary["success_rate"] == pytest.approx(2 / 3)
    assert summary["n_unjudged"] == 1
    assert 0.0 <= summary["success_ci_low"] <= 2 / 3 <= summary["success_ci_high"] <= 1.0
    assert per_item[:3] == [1.0, 1.0, 0.0] and math.isnan(per_item[3])  # unjudged: not a failure
    assert math.isnan(score_free_text([None])[0]["success_rate"])


def test_unjudged_answers_are_left_out_of_categories_and_rankings():
    rows = [{"id": str(i), "context": "c", "question": f"q{i}", "answer": "a", "category": c}
            for i, c in enumerate(["x", "x", "x", "y"])]  # fmt: skip
    items = expand_items(rows, "free_text")
    verdicts = {"good": True, "bad": False, "odd": None}
    judge = lambda its, preds: [verdicts[p] for p in preds]  # noqa: E731
    metrics, table = score_systems(
        FreeText(judge=judge, n_resamples=100), items,
        {"student": ["good", "bad", "odd", "odd"], "baseline": ["bad"] * 4},
    )  # fmt: skip
    assert metrics["student"]["success_rate"] == 0.5 and metrics["student"]["n_unjudged"] == 2
    # Category x: 1 success, 1 failure, 1 unjudged -> 0.5 like the headline (not 1/3); y: nothing judged.
    assert metrics["per_category"]["x"]["student"]["success_rate"] == 0.5
    assert math.isnan(metrics["per_category"]["y"]["student"]["success_rate"])
    sections = report_sections(metrics | {"gold_test": "g", "baseline_definition": "b",
                                                   "baseline_answer": "bad"}, table, "s", [])  # fmt: skip
    ranked = {s["title"]: s["blocks"][0][2] for s in sections if s["title"].startswith("10 ")}
    assert [r[0] for r in ranked["10 best student answers"]] == ["0", "1"]
    assert [r[0] for r in ranked["10 worst student answers"]] == ["1", "0"]
    confusion = plot_files(metrics, table, [])["confusion.csv"].splitlines()
    assert confusion[1:] == ["x,success", "x,fail", "x,unjudged", "y,unjudged"]


def test_free_text_needs_a_judge_and_uses_it():
    items = expand_items([{"context": "c", "question": "Say hi", "answer": "hi"}] * 2, "free_text")
    with pytest.raises(ValueError):
        summarize("free_text", ["hi", "bye"], items)
    headline, per_item = summarize(
        "free_text", ["hi", "bye"], items, judge=lambda its, preds: [p == "hi" for p in preds]
    )
    assert headline["success_rate"] == 0.5 and [p["score"] for p in per_item] == [1.0, 0.0]


class _FakeJudgeTeacher:
    """A stand-in teacher with the offline teacher's chat interface: success iff the answer says 'yes'."""

    def chat(self, messages, *, model, temperature, seed, max_tokens):
        text = messages[-1]["content"]
        answer = text.split("Answer to judge:")[1].split("\n")[0].strip()
        content = json.dumps({"success": answer == "yes", "reason": "fake"})
        return {
            "content": content,
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }


def test_teacher_judge_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILL_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    judge = teacher_judge(
        str(REPO_ROOT / "prompts/judge_success.yaml"),
        "offline-teacher",
        0,
        _FakeJudgeTeacher(),
    )
    items = expand_items([{"context": "c", "question": "q"}] * 3, "free_text")
    assert judge(items, ["yes", "no", "yes"]) == [True, False, True]


def test_score_systems_table_and_per_category():
    rows = [
        {"id": "1", "context": "c", "question": "q", "answer": "red fox", "category": "x"},
        {"id": "2", "context": "c", "question": "q", "answer": "owl", "category": "y"},
    ]
    items = expand_items(rows, "qa")
    metrics, table = score_systems(
        task_class("qa")(), items, {"student": ["fox", "owl"], "baseline": ["owl", "owl"]}
    )
    # student: item 1 "fox" vs "red fox": P 1, R 1/2, F1 2/3; item 2 exact.
    assert metrics["student"]["token_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["per_category"]["x"] == {
        "n": 1,
        "student": {"exact_match": 0.0, "token_f1": pytest.approx(2 / 3)},
        "baseline": {"exact_match": 0.0, "token_f1": 0.0},
    }
    assert table["baseline_prediction"].to_list() == ["owl", "owl"]
    plots = plot_files(metrics, table, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    assert plots["confusion.csv"].splitlines() == ["actual,predicted", "x,partial", "y,exact"]
    assert plots["train_loss.csv"].splitlines() == ["step,loss", "1,2.0", "2,1.0"]
    assert plots["headline.csv"].splitlines()[1].startswith("student exact_match,student,0.5")


def test_breakdown_json_holds_what_metrics_json_leaves_out(tmp_path):
    """metrics.json (a DVC metric) keeps the headline; per category and details go to breakdown.json."""
    rows = [
        {"id": "1", "text": "great film", "label": "positive", "category": "film"},
        {"id": "2", "text": "awful", "label": "negative", "category": "book"},
    ]
    items = expand_items(rows, "classification")
    labels = ["positive", "negative"]
    metrics, table = score_systems(
        Classification(labels), items, {"student": ["positive", "negative"], "baseline": ["positive"] * 2}
    )
    assert {"per_category", "details"} <= set(metrics)  # in memory, for the report
    write_outputs(tmp_path, metrics, table, "md", "html", {})
    written = json.loads((tmp_path / "metrics.json").read_text())
    breakdown = json.loads((tmp_path / "breakdown.json").read_text())
    assert "per_category" not in written and "details" not in written
    assert written["student"]["accuracy"] == 1.0 and written["task"] == "classification"
    assert set(breakdown) == {"task", "n_test", "per_category", "details"}
    assert set(breakdown["per_category"]) == {"film", "book"}
    assert breakdown["details"]["student"]["confusion"]["counts"] == [[1, 0, 0], [0, 1, 0]]


def test_diversity_figures_name_their_backends():
    texts = ["Where is Rome?", "Where is Paris?", "Who founded Kordel?", "When was Anzanan founded?"]
    out = diversity_figures(texts, max_texts=3, embedding="tfidf", embedding_model=None,
                                     reference_texts=None, seed=0)  # fmt: skip
    assert out["n_texts"] == 4 and out["n_sampled"] == 3
    assert out["backends"]["mean_pairwise_cosine"] == "tfidf"
    assert out["backends"]["entity_entropy"] == "capitalised-spans"
    assert "mauve" not in out
    # distinct-1 over the whole set: 17 tokens ("?" counts), 11 distinct.
    assert out["distinct_1"] == pytest.approx(11 / 17)
    assert [n for n in range(1, 6) if 0 <= out[f"self_bleu_{n}"] <= 1] == [1, 2, 3, 4, 5]
    assert out["self_bleu_1"] > out["self_bleu_5"]  # higher orders match less
    assert "labelwise_cosine" not in out
    with_ref = diversity_figures(texts, 10, "tfidf", None, ["Where is Oslo?", "Who built it?"], 0)
    assert 0.0 <= with_ref["mauve"] <= 1.0 and "tfidf" in with_ref["backends"]["mauve"]
    assert diversity_figures(["only one"], 10, "tfidf", None, None, 0)["n_texts"] == 1


def test_diversity_figures_label_wise() -> None:
    texts = ["great film, loved it", "great film, loved the cast", "awful book", "dull awful book"]
    labels = ["pos", "pos", "neg", "neg"]
    out = diversity_figures(texts, 10, "tfidf", None, None, 0, labels)
    per_label = out["labelwise_cosine_per_label"]
    assert {k: v["n_texts"] for k, v in per_label.items()} == {"neg": 2, "pos": 2}
    means = [per_label[label]["mean_cosine"] for label in ("neg", "pos")]
    assert out["labelwise_cosine"] == pytest.approx(sum(means) / 2)
    # Texts that share a label are closer than the set as a whole.
    assert out["labelwise_cosine"] > out["mean_pairwise_cosine"]
    assert out["backends"]["labelwise_cosine"] == "tfidf"
    blank = diversity_figures(["", *texts], 10, "tfidf", None, None, 0, ["x", *labels])
    assert blank["labelwise_cosine"] == pytest.approx(out["labelwise_cosine"])  # blank texts drop their label
    with pytest.raises(ValueError, match="4 texts for 3 labels"):
        diversity_figures(texts, 10, "tfidf", None, None, 0, labels[:3])


def test_svg_charts_and_html():
    svg = report.bar_chart_svg("t", ["a", "b"], {"s1": [0.5, 1.0], "s2": [0.0, float("nan")]})
    assert svg.count('class="bar"') == 4 and svg.startswith("<svg")
    cm = report.confusion_svg("cm", ["x", "y"], ["x", "y", "<invalid>"], [[1, 0, 2], [0, 3, 0]])
    assert cm.count('class="cell"') == 6 and "&lt;invalid&gt;" in cm
    line = report.line_chart_svg("loss", [1, 2, 3], [3.0, 2.0, 1.5])
    assert 'class="line"' in line
    sections = [
        {"title": "A <b>", "blocks": [("p", "x & y"), ("table", ["h"], [[0.12345]]), ("svg", svg, "c")]}
    ]
    html = report.render_html("R", sections)
    assert "<h2>A &lt;b&gt;</h2>" in html and "<td>0.123</td>" in html and svg in html
    md = report.render_markdown("R", sections)
    assert "| 0.123 |" in md and "![c](data:image/svg+xml;base64," in md


def test_report_ranks_best_and_worst():
    items = expand_items(
        [{"id": str(i), "context": "c", "question": f"q{i}", "answer": "owl"} for i in range(12)], "qa"
    )
    preds = ["owl" if i % 2 else "cat" for i in range(12)]
    metrics, table = score_systems(task_class("qa")(), items, {"student": preds, "baseline": ["owl"] * 12})
    metrics |= {"gold_test": "g.jsonl", "baseline_definition": "d", "baseline_answer": "owl"}
    md, html = render_report(metrics, table, "student", [])
    best = md.split("## 10 best student answers")[1].split("## 10 worst")[0]
    assert best.count("| 1.000 |") == 6  # the six right answers come first
    assert "Training loss" not in md and html.count("<svg") == 2
    assert isinstance(pl.DataFrame(table), pl.DataFrame)


class _FakeAnsweringTeacher:
    """Answers with the last word of the question, except for questions holding 'skip' (empty JSON)."""

    def chat(self, messages, *, model, temperature, seed, max_tokens):
        question = messages[-1]["content"].split("Question:")[1].split("\n")[0].strip()
        value = {} if "skip" in question else {"answer": question.rstrip("?").split()[-1]}
        return {"content": json.dumps(value), "finish_reason": "stop", "usage": {}}


def test_teacher_reference_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILL_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    prompt = str(REPO_ROOT / "prompts/reference_answer.yaml")
    items = expand_items(
        [
            {"context": "c", "question": "Who is Ann?", "answer": "Ann"},
            {"context": "c", "question": "skip this", "answer": "x"},
        ],
        "qa",
    )
    answers, info = teacher_answers(items, prompt, "offline-teacher", 0, _FakeAnsweringTeacher())
    assert answers == ["Ann", ""]
    assert info["n_unanswered"] == 1 and info["backend"] == "offline"
    metrics, table = score_systems(
        task_class("qa")(), items, {"student": ["Ann", "y"], "baseline": ["x", "x"], "teacher": answers}
    )
    assert metrics["teacher"] == {"exact_match": 0.5, "token_f1": 0.5}
    assert "teacher_prediction" in table.columns
    metrics |= {
        "gold_test": "g",
        "baseline_definition": "d",
        "baseline_answer": "x",
        "teacher_reference": info,
    }
    md, html = render_report(metrics, table, "s", [])
    assert "| teacher | 0.500 | 0.500 |" in md and "Student vs baseline vs teacher" in html
    assert "1 got no valid answer" in md


def test_references_come_from_the_named_column_and_squad_answers_are_accepted():
    answers = {"text": ["Paris", "the city of Paris"], "answer_start": [0, 0]}
    rows = [{"id": "a", "context": "c", "question": "q", "answers": answers, "topic": "geo"}]
    items = expand_items(rows, "qa", reference_column="answers", category_column="topic")
    assert items[0]["reference"] == ["Paris", "the city of Paris"] and items[0]["category"] == "geo"
    assert items[0]["answers"] == answers  # the gold row's columns stay on the item (the prompt's)
    headline, _ = summarize("qa", ["city of paris"], items)
    assert headline["exact_match"] == 1.0  # "the" is dropped by the SQuAD normalisation
    rows = [{"id": "1", "text": "A storm hit the coast.", "topic": "weather"}]
    items = expand_items(rows, "classification", labels=["weather"], reference_column="topic")
    assert items[0]["reference"] == "weather" and items[0]["text"] == "A storm hit the coast."
    with pytest.raises(ValueError, match="no reference column 'label'"):
        expand_items(rows, "classification", labels=["weather"])


def test_the_predictions_table_shows_a_classification_item_by_its_text():
    rows = [
        {"id": "1", "text": "A storm hit.", "label": "weather"},
        {"id": "2", "text": "Goal!", "label": "sport"},
    ]
    task = Classification(["weather", "sport"])
    metrics, table = score_systems(task, task.items(rows), {"student": ["weather", "weather"]})
    assert table.columns[:5] == ["id", "turn", "category", "text", "answer"]
    assert metrics["student"]["accuracy"] == 0.5 and metrics["student"]["macro_f1"] == pytest.approx(1 / 3)


# --- cot_answer: the final answer is scored, never the reasoning


def test_cot_answer_scores_the_final_answer_only():
    from dagster_project.evaluation.tasks import ChainOfThoughtAnswer, final_answer

    task = ChainOfThoughtAnswer(reference_column="answer")
    rows = [
        {"id": "a", "input": "x", "answer": "17"},
        {"id": "b", "input": "y", "answer": "1200"},
        {"id": "c", "input": "z", "answer": "8"},
        {"id": "d", "input": "w", "output": "2 * 4 = 8. Answer: 8"},
    ]
    items = task.items(rows[:3])
    predictions = [
        "12 + 9 = 99, which is silly. Answer: 17",  # wrong reasoning, right final answer: correct
        "the answer is 1,200.",  # the number by value
        "2 * 4 = 8. Answer: 9",  # right reasoning, wrong final answer: wrong
    ]
    headline, per_item = task.score(predictions, items)
    assert [s["answer_accuracy"] for s in per_item] == [1.0, 1.0, 0.0]
    assert headline["answer_accuracy"] == 2 / 3 and headline["answer_found_rate"] == 1.0
    assert [s["cot_words"] for s in per_item] == [8.0, 1.0, 5.0]  # words before the marker
    assert headline["cot_words_max"] == 8.0 and headline["cot_words_median"] == 5.0
    # no final-answer marker: wrong and counted as not found, whatever numbers the text holds
    headline, per_item = task.score(["17"], items[:1])
    assert per_item[0]["answer_found"] == 0.0 and headline["answer_accuracy"] == 0.0
    # a gold chain of thought as the reference: its final answer is what counts
    full = ChainOfThoughtAnswer(reference_column="output").items(rows[3:])
    assert full[0]["reference"] == ["8"]
    assert final_answer("Answer: 3. So the answer is 4") == ("4", "Answer: 3. So the")
