"""The `dpo` kind's checks before any training: held-out pairs never share an input with training pairs,
bad preference tables and loss settings are named with the fix. (One DPO round on the offline data raising
the held-out margin is measured in tests/e2e/test_critic.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from dagster_project.stages.dpo import Params, split_by_key
from dagster_project.student.prompt_format import PromptFormat


def test_held_out_pairs_never_share_an_input_with_training_pairs() -> None:
    df = pl.DataFrame(
        {"sentence": [f"s{i // 3}" for i in range(30)], "chosen": ["a"] * 30, "rejected": ["b"] * 30}
    )
    train, val = split_by_key(df, "sentence", 0.2, seed=0)
    assert train.height + val.height == 30 and val.height == 6  # 2 of 10 inputs, all 3 pairs of each
    assert not set(train["sentence"]) & set(val["sentence"])
    assert split_by_key(df, "sentence", 0.2, seed=0)[1].equals(val)


def test_loss_weights_need_one_weight_per_loss_type() -> None:
    Params.model_validate({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}, strict=False)
    with pytest.raises(ValueError, match="one weight per loss type"):
        Params.model_validate({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, strict=False)


def test_a_preference_table_without_the_prompt_columns_is_named(tmp_path: Path) -> None:
    student = tmp_path / "student"
    student.mkdir()
    PromptFormat("plain", "Sentence: {sentence}\nFunny:", " {paraphrase}").save(student)
    prefs = tmp_path / "prefs"
    prefs.mkdir()
    pl.DataFrame({"text": ["x"], "chosen": ["a"], "rejected": ["b"]}).write_parquet(
        prefs / "preferences.parquet"
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dpo": {"key_column": "sentence"}}))
    cmd = [sys.executable, "-m", "dagster_project.stages.dpo", "--params", str(tmp_path / "params.yaml")]
    cmd += ["--student", str(student), "--preferences", str(prefs), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode != 0 and "has no column(s) ['sentence']" in proc.stderr
    assert not (tmp_path / "out").exists()
