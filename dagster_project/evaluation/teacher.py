"""The evaluate stage's calls to the teacher: reference answers and the free_text judge (through the
teacher engine and its cache)."""

from collections.abc import Mapping, Sequence
from typing import Any


def teacher_answers(
    items: Sequence[Mapping[str, Any]], prompt_path: str, model: str, seed: int, teacher: Any = None
) -> tuple[list[str], dict[str, Any]]:
    """Reference answers of the teacher (through the teacher engine and its cache) for every item.

    An item the teacher could not answer (every sample rejected, e.g. by the offline teacher, which only
    speaks the synthesis prompt) gets "" and is counted in `n_unanswered`.
    """
    # The teacher stack (openai, jsonschema...) is imported only when a teacher is asked for.
    from dagster_project.teacher.engine import TeacherEngine, TeacherRequest
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(prompt_path)
    requests = [
        TeacherRequest.from_prompt(
            prompt, model=model, seed=seed, context=it["context"], question=it["question"]
        )
        for it in items
    ]
    engine = TeacherEngine(max_attempts=1, teacher=teacher)
    try:
        results = engine.run(requests)
    finally:
        engine.cache.close()
    answers = [str((r.value or {}).get("answer", "")).strip() if r.ok else "" for r in results]
    info = {"model": model, "backend": engine.backend_kind, "prompt": prompt_path}
    return answers, info | {"n_unanswered": sum(not r.ok for r in results)}


def teacher_judge(prompt_path: str, model: str, seed: int, teacher: Any = None):
    """A judge callable for `free_text`: the teacher labels each answer a success (True) or not (False).

    The judge prompt gets `context`, `question`, `answer` (the system's) and `reference` (gold, may be
    empty) and must return {"success": bool, ...}; an answer with no valid verdict is None (unjudged).
    """
    from dagster_project.teacher.engine import TeacherEngine, TeacherRequest
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(prompt_path)

    def judge(items: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> list[bool | None]:
        requests = [
            TeacherRequest.from_prompt(
                prompt,
                model=model,
                seed=seed,
                context=it["context"],
                question=it["question"],
                answer=pred,
                reference=str(it.get("reference") or ""),
            )
            for it, pred in zip(items, predictions, strict=True)
        ]
        engine = TeacherEngine(max_attempts=1, teacher=teacher)
        try:
            results = engine.run(requests)
        finally:
            engine.cache.close()
        return [bool(r.value.get("success")) if r.ok and isinstance(r.value, dict) else None for r in results]

    return judge
