"""Teacher-as-judge filter: the teacher engine rates each row with a judge prompt (prompts/judge_*.yaml,
answer `{"score": int, ...}`); rows rated below a threshold are removed by the caller.

Every call goes through `TeacherEngine` (cache, retries, validation), so a rerun with the same prompt and
rows is free. A row the judge could not rate (every sample rejected) gets no score and is kept; the
caller counts those.
"""

from typing import Any

import numpy as np
import polars as pl

from dagster_project.teacher.engine import TeacherEngine, TeacherRequest
from dagster_project.teacher.prompts import load_prompt


def judge_scores(
    df: pl.DataFrame,
    prompt_path: str,
    model: str,
    *,
    temperature: float = 0.0,
    seed: int | None = 0,
    max_attempts: int = 2,
    engine: TeacherEngine | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The judge's score of each row (NaN where unrated) and the engine's counters.

    The prompt's template variables are filled from the row's columns of the same name.
    """
    prompt = load_prompt(prompt_path)
    missing = sorted(prompt.variables - set(df.columns))
    if missing:
        raise ValueError(f"{prompt_path}: the rows have no column(s) {missing} for the judge prompt")
    rows = df.select(sorted(prompt.variables)).iter_rows(named=True)
    requests = [
        TeacherRequest.from_prompt(prompt, model=model, temperature=temperature, seed=seed, **row)
        for row in rows
    ]
    own = engine is None
    engine = engine or TeacherEngine(max_attempts=max_attempts)
    try:
        results = engine.run(requests)
    finally:
        if own:
            engine.cache.close()
    scores = np.array(
        [float(r.value["score"]) if r.ok and isinstance(r.value, dict) else np.nan for r in results]
    )
    return scores, {**engine.counters.as_dict(), "backend": engine.backend_kind}
