"""The evaluate stage's calls to the teacher: reference answers and the free_text judge, both through the
teacher primitive (`teacher.mapping`: engine, cache, schema validation, the prompt's declared checks)."""

from collections.abc import Mapping, Sequence
from typing import Any

ITEM = "_item"  # the row column that ties each answer back to its item


def _map(prompt_path: str, rows: list[dict[str, Any]], model: str, seed: int, teacher: Any, value: str):
    """{item index: the answer's `value` field} for the rows the teacher answered, and the engine info."""
    # The teacher stack (openai, jsonschema...) is imported only when a teacher is asked for.
    from dagster_project.teacher.engine import TeacherEngine
    from dagster_project.teacher.mapping import build_requests, map_prompt
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(prompt_path)
    rows = [{**row, ITEM: i} for i, row in enumerate(rows)]
    variables = {v: v for v in prompt.variables}
    requests = build_requests(prompt, rows, model=model, variables=variables, seed=seed)
    with TeacherEngine(max_attempts=1, teacher=teacher) as engine:
        result = map_prompt(engine, prompt, requests, carry={ITEM: ITEM})
    answered = {row[ITEM]: row.get(value) for row in result.rows}
    return answered, {"model": model, "backend": engine.backend_kind, "prompt": prompt_path}


def teacher_answers(
    items: Sequence[Mapping[str, Any]], prompt_path: str, model: str, seed: int, teacher: Any = None
) -> tuple[list[str], dict[str, Any]]:
    """Reference answers of the teacher for every item (prompt variables `context`, `question`).

    An item the teacher could not answer (every sample rejected) gets "" and is counted in `n_unanswered`.
    """
    rows = [{"context": it["context"], "question": it["question"]} for it in items]
    answered, info = _map(prompt_path, rows, model, seed, teacher, "answer")
    answers = [str(answered.get(i) or "").strip() for i in range(len(items))]
    return answers, info | {"n_unanswered": len(items) - len(answered)}


def teacher_judge(prompt_path: str, model: str, seed: int, teacher: Any = None):
    """A judge callable for `free_text`: the teacher labels each answer a success (True) or not (False).

    The judge prompt gets `context`, `question`, `answer` (the system's) and `reference` (gold, may be
    empty) and must return {"success": bool, ...}; an answer with no valid verdict is None (unjudged).
    """

    def judge(items: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> list[bool | None]:
        rows = [
            {
                "context": it["context"],
                "question": it["question"],
                "answer": pred,
                "reference": str(it.get("reference") or ""),
            }
            for it, pred in zip(items, predictions, strict=True)
        ]
        verdicts, _ = _map(prompt_path, rows, model, seed, teacher, "success")
        return [bool(verdicts[i]) if i in verdicts else None for i in range(len(items))]

    return judge
