"""The `critique` kind: every pair asked in both orders through the real teacher engine (the offline
critic, whose stated preference and planted position bias are known), inconsistent verdicts discarded
and counted, and every preference oriented with the critic's winner as `chosen`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from dagster_project.stages.critique import Params, position_bias, preferences, win_rate
from dagster_project.teacher.offline.critic import critic_choice, humor_score

REPO = Path(__file__).resolve().parents[2]
PROMPT = REPO / "examples/critic/prompts/pairwise_critic.yaml"
SENTENCE = "The bus was late on Monday."
GOOD = "The bus was late on Monday, like a sulking cat, and the whole town noticed."  # score 4
SIMILE = "The bus was late on Monday, like a diva on strike."  # 3
EXAGGERATION = "The bus was late on Monday, for the hundredth time."  # 3
FLAT = "The bus was late on Monday. Funny, right?"  # 1
LOST = "The train was fine, like a sulking cat."  # loses the sentence: 1


def _params(**extra) -> dict:
    return {
        "prompt": str(PROMPT),
        "key_column": "sentence",
        "input_columns": {"sentence": "sentence"},
        "candidate_column": "paraphrase",
        **extra,
    }


def _run(tmp_path: Path, section: dict, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"critique": section}))
    cmd = [
        sys.executable,
        "-m",
        "dagster_project.stages.critique",
        "--params",
        str(tmp_path / "params.yaml"),
        *args,
    ]
    env = {**os.environ, "DISTILL_TEACHER_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


def test_the_offline_critic_states_its_preference_and_its_position_bias() -> None:
    assert [humor_score(SENTENCE, t)[0] for t in (GOOD, SIMILE, EXAGGERATION, FLAT, LOST)] == [4, 3, 3, 1, 1]
    assert critic_choice(SENTENCE, FLAT, GOOD)[0] == "B" and critic_choice(SENTENCE, GOOD, FLAT)[0] == "A"
    # a tie goes to the option shown first, whichever it is: inconsistent when asked in both orders
    assert (
        critic_choice(SENTENCE, SIMILE, EXAGGERATION)[0]
        == critic_choice(SENTENCE, EXAGGERATION, SIMILE)[0]
        == "A"
    )


def test_planted_verdicts_consistent_kept_inconsistent_discarded_and_counted() -> None:
    params = Params.model_validate(_params(), strict=False)
    base = {"sentence": SENTENCE}
    verdicts = [  # (first shown first: verdict_ab), (second shown first: verdict_ba)
        {
            **base,
            "pair_id": "1",
            "first": "x1",
            "second": "y1",
            "verdict_ab": "A",
            "verdict_ba": "B",
            "winner": "x1",
        },
        {
            **base,
            "pair_id": "2",
            "first": "x2",
            "second": "y2",
            "verdict_ab": "B",
            "verdict_ba": "A",
            "winner": "y2",
        },
        {
            **base,
            "pair_id": "3",
            "first": "x3",
            "second": "y3",
            "verdict_ab": "A",
            "verdict_ba": "A",
            "winner": None,
        },
        {
            **base,
            "pair_id": "4",
            "first": "x4",
            "second": "y4",
            "verdict_ab": "B",
            "verdict_ba": "B",
            "winner": None,
        },
        {
            **base,
            "pair_id": "5",
            "first": "x5",
            "second": "y5",
            "verdict_ab": "A",
            "verdict_ba": None,
            "winner": None,
        },
    ]
    bias = position_bias(verdicts)
    assert bias["n_pairs"] == 5 and bias["n_unanswered"] == 1
    assert (bias["n_consistent"], bias["n_inconsistent"]) == (2, 2)
    assert bias["consistency_rate"] == 0.5
    assert (bias["n_inconsistent_first"], bias["n_inconsistent_second"]) == (1, 1)
    assert bias["first_position_rate"] == 0.5  # 4 of the 8 answered verdicts chose the first slot
    prefs = preferences(verdicts, params)
    assert prefs.select("chosen", "rejected").rows() == [("x1", "y1"), ("y2", "x2")]
    assert win_rate(verdicts[:4], identical=1, params=params)["win_rate"] == pytest.approx(
        (1 + 0 + 0.5 * 3) / 5
    )


def test_candidates_both_orders_through_the_engine(tmp_path: Path) -> None:
    texts = [GOOD, SIMILE, EXAGGERATION, FLAT, LOST]
    rows = [{"sentence": SENTENCE, "paraphrase": t, "candidate": i} for i, t in enumerate(texts)]
    rows += [
        {"sentence": SENTENCE, "paraphrase": GOOD, "candidate": 9},
        {"sentence": SENTENCE, "paraphrase": ""},
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "candidates.parquet")
    proc = _run(
        tmp_path, _params(max_pairs_per_input=10), "--candidates", "candidates.parquet", "--out", "out"
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    # 5 distinct non-empty texts: 10 pairs, each asked twice; the ties (SIMILE-EXAGGERATION, FLAT-LOST)
    # are inconsistent
    assert stats["n_requests"] == 20 and stats["n_pairs"] == 10
    assert (stats["n_consistent"], stats["n_inconsistent"], stats["n_inconsistent_first"]) == (8, 2, 2)
    assert stats["first_position_rate"] == pytest.approx(12 / 20)  # 8 consistent pairs: 8 "A"; 2 ties: 4 "A"
    prefs = pl.read_parquet(tmp_path / "out/preferences.parquet")
    assert prefs.height == stats["n_preferences"] == 8
    for chosen, rejected in prefs.select("chosen", "rejected").rows():  # orientation: chosen is the winner
        assert humor_score(SENTENCE, chosen)[0] > humor_score(SENTENCE, rejected)[0]
    verdicts = pl.read_parquet(tmp_path / "out/verdicts.parquet")
    assert verdicts.filter(pl.col("winner").is_null()).height == 2


def test_versus_win_rates_with_intervals(tmp_path: Path) -> None:
    sentences = [f"The bus was late on day {i}." for i in range(6)]
    good = [{"sentence": s, "paraphrase": s.rstrip(".") + ", like a sulking cat."} for s in sentences]
    flat = [{"sentence": s, "paraphrase": s + " Funny, right?"} for s in sentences]
    pl.DataFrame(good).write_parquet(tmp_path / "good.parquet")
    pl.DataFrame(flat[:5] + [good[5]]).write_parquet(tmp_path / "flat.parquet")
    proc = _run(
        tmp_path, _params(), "--system", "good=good.parquet", "--against", "flat=flat.parquet", "--out", "vs"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "vs/versus.json").read_text())["against"]["flat"]
    assert (result["wins"], result["losses"], result["identical"], result["n"]) == (5, 0, 1, 6)
    assert result["win_rate"] == pytest.approx(5.5 / 6)
    assert result["ci_low"] <= result["win_rate"] <= result["ci_high"]


def test_bad_invocations_name_the_fix(tmp_path: Path) -> None:
    pl.DataFrame({"sentence": ["a"], "text": ["b"]}).write_parquet(tmp_path / "c.parquet")
    proc = _run(tmp_path, _params(), "--candidates", "c.parquet", "--out", "o")
    assert proc.returncode != 0 and "has no column(s) ['paraphrase']" in proc.stderr
    proc = _run(tmp_path, _params(), "--system", "x=c.parquet", "--out", "o")
    assert proc.returncode != 0 and "--against" in proc.stderr
