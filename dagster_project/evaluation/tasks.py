"""Task kinds of the evaluate stage (`evaluate.task`), one class each, in one registry (`TASKS`).

A task says how a gold row becomes the items the student answers (`items`), how one system's answers
score (`score`: headline figures and per-item figures), what its report shows (`headline_table`,
`sections`) and how its outcomes go into the confusion plot (`confusion_rows`). Adding a task is one
subclass of `Task` with `@register`.

Gold rows are JSON lines with named columns, read and checked by `gold_schema.read_gold` (one schema per
task kind; SQuAD and CoQA layouts accepted). Every item keeps its gold row's columns (the student's
prompt is rendered over them, in its saved prompt format) and adds `row`, `id`, `category`, `turn` and
`reference` (from the columns `evaluate.id_column`, `category_column` and `reference_column`; a gold
column of one of these names is shadowed). A reference is a string, a list of accepted strings, or a
SQuAD-style `answers` mapping with a `text` list.

- `qa`: one item per row; reference column default `answer`. Scores: SQuAD exact match and token F1,
  max over the references.
- `multi_turn_qa`: `context` and `turns: [{question, answer}]`. One item per turn; turn t's context is the
  document followed by the gold history of turns < t ("Q: ... A: ..." lines), as CoQA/QuAC evaluate (gold
  history, so an early mistake does not cascade). Scores: per-turn F1/EM, turn-weighted means.
- `classification`: reference column default `label`. The student's generated words are mapped onto
  `evaluate.labels` (`metrics.classification.map_to_label`; unmatched text is `<invalid>`). Scores:
  accuracy, macro-F1, per-class P/R/F1, confusion matrix. For a student in the default QA format, an item
  also gets `context` (the row's `text`) and a `question` (the row's, or a generic one).
- `cot_answer`: a chain of thought ending in a final answer ("12 + 5 = 17. Answer: 17"); reference column
  default `answer`. Only the final answer is scored (numbers by value): answer accuracy, the share of
  answers with a final-answer marker, and chain-of-thought length in words (mean, median, max).
- `free_text`: a judge (the teacher with a judge prompt) labels each answer a success or not; the
  reference (column default `answer`, optional) is shown to the judge. Scores: success rate with a 95%
  percentile-bootstrap interval; answers the judge could not label are counted, not guessed.

Every task also yields a per-item `score` in [0, 1] (F1, correctness or judge success) that ranks the
best and worst examples in the report.
"""

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from dagster_project.evaluation.charts import confusion_svg
from dagster_project.evaluation.gold_schema import reference_list
from dagster_project.metrics.agreement import success_rate
from dagster_project.metrics.classification import classification_report, map_predictions
from dagster_project.metrics.qa import exact_match_multi, token_f1_multi

Judge = Callable[[Sequence[Mapping[str, Any]], Sequence[str]], list[bool | None]]
Section = dict[str, Any]

DEFAULT_CLASSIFICATION_QUESTION = "Which label fits this text?"


def reference_value(value: Any) -> str | list[str]:
    """A gold reference as a string or a list of accepted strings (SQuAD's {"text": [...]} too)."""
    if isinstance(value, Mapping):
        value = value.get("text", [])
    if isinstance(value, str):
        return value
    return [str(v) for v in value] if isinstance(value, list | tuple) else str(value)


def reference_text(reference: Any) -> str:
    """A reference as one string (a list joined by " | ")."""
    return reference if isinstance(reference, str) else " | ".join(str(r) for r in reference)


def _first(answer: str | Sequence[str]) -> str:
    return answer if isinstance(answer, str) else (answer[0] if answer else "")


class Task:
    """A task kind: subclass it, set the class attributes, override what differs, and `@register` it."""

    name: ClassVar[str]
    headline_keys: ClassVar[list[str]]  # metrics.json figures per system, in the headline table and plot
    category_key: ClassVar[str]  # the per-item figure shown per category
    metric_note: ClassVar[str]  # what the figures mean (the report's setup paragraph)
    default_reference_column: ClassVar[str | None] = "answer"
    # what the predictions table and the report show of each item's input: table column -> item field
    input_columns: ClassVar[dict[str, str]] = {"question": "question"}

    def __init__(
        self,
        labels: Sequence[str] = (),
        judge: Judge | None = None,
        reference_column: str | None = None,
        id_column: str = "id",
        category_column: str = "category",
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> None:
        self.labels, self.judge = list(labels), judge
        self.reference_column = reference_column or self.default_reference_column
        self.id_column, self.category_column = id_column, category_column
        self.n_resamples, self.seed = n_resamples, seed

    @classmethod
    def check_params(cls, params: Any) -> list[str]:
        """Problems with the `evaluate` params for this task (reported at params time)."""
        return []

    # --- items and scores

    def items(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One item per prompt the student answers: the gold row's columns plus row, id, category, turn,
        reference."""
        return [self._base(i, row) | {"reference": self._reference(row)} for i, row in enumerate(rows)]

    def _base(self, i: int, row: Mapping[str, Any]) -> dict[str, Any]:
        category = str(row.get(self.category_column) or "all")
        return {**row, "row": i, "id": str(row.get(self.id_column, i)), "category": category, "turn": 0}

    def _reference(self, row: Mapping[str, Any]) -> str | list[str]:
        return reference_value(row.get(self.reference_column, "")) if self.reference_column else ""

    def score(
        self, predictions: Sequence[str], items: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(headline figures, per-item figures) of one system's answers. Per-item figures always hold
        `score` plus the task's own; the headline may hold `_details` (breakdowns) that callers move out."""
        raise NotImplementedError

    # --- report and plots

    def headline_table(self, metrics: Mapping[str, Any], systems: Sequence[str]) -> tuple[list, list]:
        """(header, rows) of the report's headline table."""
        rows = [[s] + [metrics[s].get(k, float("nan")) for k in self.headline_keys] for s in systems]
        return ["system", *self.headline_keys], rows

    def sections(self, metrics: Mapping[str, Any]) -> list[Section]:
        """The task's own report sections (after the per-category one)."""
        return []

    def confusion_rows(self, table: Any) -> list[dict[str, str]]:
        """Rows (actual, predicted) of confusion.csv, one per item of the predictions table."""
        raise NotImplementedError


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; one of {list(TASKS)}")
    return TASKS[name]


# ------------------------------------------------------------------------------------------------ tasks


def score_qa_items(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[dict]:
    """Per item {"exact_match", "token_f1"}, each the max over that item's gold answers."""
    return [
        {"exact_match": exact_match_multi(p, r), "token_f1": token_f1_multi(p, r)}
        for p, r in zip(predictions, references, strict=True)
    ]


@register
class QA(Task):
    name = "qa"
    headline_keys = ["exact_match", "token_f1"]
    category_key = "token_f1"
    metric_note = (
        "SQuAD-style exact match and token F1 after normalization (lowercase, no punctuation, no articles "
        "a/an/the, collapsed whitespace), max over the gold answers."
    )

    def _reference(self, row):  # noqa: ANN001, ANN202
        """A non-empty reference: a QA item is never scored against nothing (`gold_schema` reads the
        file; this guards rows built any other way)."""
        column = self.reference_column or "answer"
        texts = reference_list(row.get(column))
        if not texts:
            raise ValueError(
                f"gold row {row.get(self.id_column, '?')!r} has no non-empty reference in {column!r} (its "
                f"columns: {', '.join(row)}); set evaluate.reference_column or fix the gold file"
            )
        return reference_value(row[column])

    def score(self, predictions, items):  # noqa: ANN001, ANN201
        per_item = score_qa_items(predictions, [it["reference"] for it in items])
        n = len(per_item)
        headline = {
            "exact_match": sum(s["exact_match"] for s in per_item) / n if n else 0.0,
            "token_f1": sum(s["token_f1"] for s in per_item) / n if n else 0.0,
        }
        return headline, [s | {"score": s["token_f1"]} for s in per_item]

    def confusion_rows(self, table):  # noqa: ANN001, ANN201
        return [
            {"actual": c, "predicted": "exact" if e >= 1.0 else ("partial" if f > 0 else "wrong")}
            for c, e, f in zip(table["category"], table["exact_match"], table["token_f1"], strict=True)
        ]


@register
class MultiTurnQA(QA):
    name = "multi_turn_qa"
    metric_note = (
        "CoQA/QuAC-style per-turn token F1 and exact match with the gold history in the prompt; means over "
        "all turns."
    )

    def items(self, rows):  # noqa: ANN001, ANN201
        items = []
        for i, row in enumerate(rows):
            turns = row["turns"]
            for t, turn in enumerate(turns):
                history = "\n".join(f"Q: {h['question']} A: {_first(h['answer'])}" for h in turns[:t])
                context = f"{row['context']}\n{history}" if history else row["context"]
                items.append(
                    self._base(i, row)
                    | {
                        "turn": t,
                        "context": context,
                        "question": turn["question"],
                        "reference": self._reference(turn),
                    }
                )
        return items

    def score(self, predictions, items):  # noqa: ANN001, ANN201
        headline, per_item = super().score(predictions, items)
        headline["n_turns"] = len(per_item)
        headline["n_conversations"] = len({it["row"] for it in items})
        return headline, per_item


@register
class Classification(Task):
    name = "classification"
    headline_keys = ["accuracy", "macro_f1"]
    category_key = "accuracy"  # macro-F1 is a set-level figure
    metric_note = (
        "the student's generated words mapped onto the label list (first label mentioned; none: <invalid>, "
        "counted wrong); accuracy, macro-F1 over the labels, confusion matrix."
    )
    default_reference_column = "label"
    input_columns = {"text": "context"}

    @classmethod
    def check_params(cls, params: Any) -> list[str]:
        if not params.labels:
            return ["task classification needs labels (the label words the student generates)"]
        return []

    def items(self, rows):  # noqa: ANN001, ANN201
        items = []
        for i, row in enumerate(rows):
            text = row.get("text", row.get("context", ""))
            question = row.get("question") or DEFAULT_CLASSIFICATION_QUESTION
            extra = {"context": text, "question": question, "reference": self._reference(row)}
            items.append(self._base(i, row) | extra)
        return items

    def _reference(self, row):  # noqa: ANN001, ANN202
        if self.reference_column not in row:
            raise ValueError(
                f"a gold row has no reference column {self.reference_column!r} (its columns: "
                f"{', '.join(row)}); set evaluate.reference_column to the column with the gold label"
            )
        return str(row[self.reference_column])

    def score(self, predictions, items):  # noqa: ANN001, ANN201
        if not self.labels:
            raise ValueError("task classification needs evaluate.labels (the label words)")
        gold = [str(it["reference"]) for it in items]
        mapped = map_predictions(predictions, self.labels)
        report = classification_report(gold, mapped, self.labels)
        headline = {
            "accuracy": report.accuracy,
            "macro_f1": report.macro_f1,
            "invalid_rate": report.invalid_rate,
            "_details": {
                "per_class": {k: vars(v) for k, v in report.per_class.items()},
                "confusion": report.confusion.to_dict(),
            },
        }
        correct = [float(m == g) for m, g in zip(mapped, gold, strict=True)]
        return headline, [
            {"accuracy": c, "score": c, "label": m} for c, m in zip(correct, mapped, strict=True)
        ]

    def sections(self, metrics):  # noqa: ANN001, ANN201
        sections = []
        for system, detail in (metrics.get("details") or {}).items():
            cm = detail["confusion"]
            rows = [[r, *row] for r, row in zip(cm["row_labels"], cm["counts"], strict=True)]
            chart = confusion_svg(
                f"{system}: gold vs predicted", cm["row_labels"], cm["col_labels"], cm["counts"]
            )
            sections.append(
                {
                    "title": f"Confusion matrix ({system})",
                    "blocks": [
                        ("table", ["gold \\ predicted", *cm["col_labels"]], rows),
                        ("svg", chart, "confusion"),
                    ],
                }
            )
        return sections

    def confusion_rows(self, table):  # noqa: ANN001, ANN201
        return [{"actual": a, "predicted": p} for a, p in zip(table["answer"], table["label"], strict=True)]


def score_free_text(
    verdicts: Sequence[bool | None], n_resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], list[float]]:
    """Success rate of judge verdicts with a 95% bootstrap interval; None = the judge gave no verdict.

    Per item: 1.0 / 0.0, and NaN for an unjudged answer, which the headline rate, the per-category means
    and the best/worst lists all leave out (it is counted in `n_unjudged`)."""
    judged = [v for v in verdicts if v is not None]
    if not judged:
        summary: dict[str, Any] = {"success_rate": float("nan"), "success_ci_low": float("nan")}
        summary["success_ci_high"] = float("nan")
    else:
        ci = success_rate(judged, n_resamples=n_resamples, seed=seed)
        summary = {"success_rate": ci.estimate, "success_ci_low": ci.low, "success_ci_high": ci.high}
    summary["n_unjudged"] = len(verdicts) - len(judged)
    return summary, [float("nan") if v is None else float(v) for v in verdicts]


@register
class FreeText(Task):
    name = "free_text"
    headline_keys = ["success_rate"]
    category_key = "success_rate"
    metric_note = (
        "the teacher as judge labels each answer a success or not; success rate with a 95% "
        "percentile-bootstrap interval (unjudged answers counted separately)."
    )

    def score(self, predictions, items):  # noqa: ANN001, ANN201
        if self.judge is None:
            raise ValueError("task free_text needs a judge (evaluate.judge_prompt)")
        headline, success = score_free_text(self.judge(items, predictions), self.n_resamples, self.seed)
        return headline, [{"success_rate": s, "score": s} for s in success]

    def headline_table(self, metrics, systems):  # noqa: ANN001, ANN201
        rows = [
            [
                s,
                metrics[s]["success_rate"],
                f"[{metrics[s]['success_ci_low']:.3f}, {metrics[s]['success_ci_high']:.3f}]",
            ]
            for s in systems
        ]
        return ["system", "success_rate", "95% CI"], rows

    def confusion_rows(self, table):  # noqa: ANN001, ANN201
        return [
            {"actual": c, "predicted": "unjudged" if math.isnan(s) else ("success" if s >= 1.0 else "fail")}
            for c, s in zip(table["category"], table["score"], strict=True)
        ]


_FINAL_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*([^\s.,;!?][^\n]*?)\s*[.;!]?\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?$")


def final_answer(text: str) -> tuple[str | None, str]:
    """(the final answer, the reasoning before it) of a chain-of-thought answer: the text after the last
    "Answer:" (or "answer is", "Answer =") marker; (None, text) when there is no marker."""
    text = str(text or "")
    marks = list(re.finditer(r"\banswer\b", text, re.IGNORECASE))
    for mark in reversed(marks):
        found = _FINAL_ANSWER.match(text, mark.start())
        if found:
            return found.group(1).strip(), text[: mark.start()].strip()
    return None, text.strip()


def same_answer(predicted: str | None, reference: str) -> bool:
    """Numbers compare by value ("1,200" == "1200.0"); other answers by their normalized words."""
    if predicted is None:
        return False
    p, r = predicted.strip(), str(reference).strip()
    if _NUMBER.match(p) and _NUMBER.match(r):
        return float(p.replace(",", "")) == float(r.replace(",", ""))
    norm = lambda s: " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())  # noqa: E731
    return norm(p) == norm(r)


@register
class ChainOfThoughtAnswer(Task):
    """A reasoning task answered with a chain of thought ending in a final answer ("... Answer: 17").

    Only the final answer is scored (the reasoning may be anything): `answer_accuracy` is the share of
    items whose final answer equals the reference (column default `answer`; a full gold chain of thought is
    accepted too, its final answer is taken); `answer_found_rate` the share with a final-answer marker at
    all; `cot_words_*` the length of the reasoning before the marker (mean, median, max), in words.
    """

    name = "cot_answer"
    headline_keys = ["answer_accuracy", "answer_found_rate", "cot_words_mean"]
    category_key = "answer_accuracy"
    metric_note = (
        "only the final answer (the text after the last 'Answer:') is compared with the reference (numbers "
        "by value), never the reasoning; answer-found rate and chain-of-thought length (words before the "
        "final answer) are reported beside it."
    )
    input_columns = {"input": "input"}

    def _reference(self, row):  # noqa: ANN001, ANN202
        ref = reference_value(row.get(self.reference_column, "")) if self.reference_column else ""
        refs = [ref] if isinstance(ref, str) else ref
        return [final_answer(r)[0] or r for r in refs]

    def score(self, predictions, items):  # noqa: ANN001, ANN201
        per_item = []
        for pred, it in zip(predictions, items, strict=True):
            answer, reasoning = final_answer(pred)
            refs = it["reference"] if isinstance(it["reference"], list) else [it["reference"]]
            correct = float(any(same_answer(answer, r) for r in refs))
            words = len(reasoning.split()) if answer is not None else len(str(pred).split())
            per_item.append(
                {
                    "answer_accuracy": correct,
                    "answer_found": float(answer is not None),
                    "cot_words": float(words),
                    "score": correct,
                }
            )
        n = len(per_item)
        words = sorted(s["cot_words"] for s in per_item)
        headline = {
            "answer_accuracy": sum(s["answer_accuracy"] for s in per_item) / n if n else 0.0,
            "answer_found_rate": sum(s["answer_found"] for s in per_item) / n if n else 0.0,
            "cot_words_mean": sum(words) / n if n else 0.0,
            "cot_words_median": (words[(n - 1) // 2] + words[n // 2]) / 2 if n else 0.0,
            "cot_words_max": words[-1] if n else 0.0,
        }
        return headline, per_item

    def confusion_rows(self, table):  # noqa: ANN001, ANN201
        return [
            {"actual": c, "predicted": "right" if a >= 1.0 else ("wrong" if f else "no answer")}
            for c, a, f in zip(
                table["category"], table["answer_accuracy"], table["answer_found"], strict=True
            )
        ]
