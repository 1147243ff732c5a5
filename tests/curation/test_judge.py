"""The teacher-as-judge hook: rows are rated through the TeacherEngine with the judge prompt."""

import json
import re

import numpy as np
import polars as pl
from helpers import REPO_ROOT

from dagster_project.curation.judge import judge_scores
from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherEngine

PROMPT = str(REPO_ROOT / "prompts" / "judge_quality.yaml")


class JudgeTeacher:
    """Scores 1 when the answer does not occur in the passage, 5 when it does; 'garbage' for '??'."""

    def chat(self, messages, *, model="m", temperature=0.0, seed=None, max_tokens=None):
        user = messages[-1]["content"]
        passage = re.search(r"<passage>\s*(.*?)\s*</passage>", user, re.S).group(1)
        answer = re.search(r"<answer>(.*?)</answer>", user, re.S).group(1)
        content = "not json" if answer == "??" else json.dumps({"score": 5 if answer in passage else 1})
        return {"content": content, "finish_reason": "stop", "usage": {}}


def test_judge_scores_rows_and_leaves_unrated_ones_nan(tmp_path):
    df = pl.DataFrame(
        {
            "context": ["Eastport is the capital.", "Eastport is the capital.", "x"],
            "question": ["What is the capital?", "What is the capital?", "?"],
            "answer": ["Eastport", "Westport", "??"],
        }
    )
    engine = TeacherEngine(
        teacher=JudgeTeacher(), cache=ResponseCache(tmp_path, mode="off"), env={}, progress=False
    )
    scores, counters = judge_scores(df, PROMPT, "offline-teacher", engine=engine)
    assert scores[:2].tolist() == [5.0, 1.0] and np.isnan(scores[2])
    assert counters["requests"] == 3 and counters["backend"] == "offline"
