"""Teacher-as-judge filter: the teacher engine rates each row with a judge prompt (prompts/judge_*.yaml,
answer `{"score": int, ...}`); rows rated below a threshold are removed by the caller.

Every call goes through the teacher primitive (`teacher.mapping`: cache, retries, validation, the prompt's
declared checks), so a rerun with the same prompt and rows is free. A row the judge could not rate (every
sample rejected) gets no score and is kept; the
caller counts those.
"""

from typing import Any

import numpy as np
import polars as pl

from dagster_project.teacher.engine import TeacherEngine
from dagster_project.teacher.mapping import build_requests, map_prompt
from dagster_project.teacher.prompts import load_prompt

ROW = "_judged_row"


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
    rows = df.select(sorted(prompt.variables)).with_row_index(ROW).to_dicts()
    requests = build_requests(
        prompt,
        rows,
        model=model,
        variables={v: v for v in prompt.variables},
        temperature=temperature,
        seed=seed,
    )
    own = engine is None
    engine = engine or TeacherEngine(max_attempts=max_attempts)
    try:
        result = map_prompt(engine, prompt, requests, carry={ROW: ROW})
    finally:
        if own:
            engine.close()
    scores = np.full(df.height, np.nan)
    for row in result.rows:
        scores[row[ROW]] = float(row["score"])
    return scores, {**engine.counters.as_dict(), "backend": engine.backend_kind}
