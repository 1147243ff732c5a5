"""The `generate` kind samples N candidates per row (temperature, top_p, seed), batched; greedy stays the
default and keeps its one-row-per-input shape."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from dagster_project.stages.generate import Params

SENTENCES = [f"The bus number {i} was late on Monday." for i in range(5)]


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained GPT-2 with a tokenizer trained on the sentences: its samples vary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dagster_project.student.model import train_tokenizer
    from dagster_project.student.prompt_format import PromptFormat

    out = tmp_path_factory.mktemp("student")
    fmt = PromptFormat("plain", "Sentence: {sentence}\nFunny:", " {paraphrase}")
    tokenizer = train_tokenizer([fmt.prompt({"sentence": s}) + " funny words here" for s in SENTENCES], 300)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    fmt.save(out)
    return out


def _generate(tmp_path: Path, student: Path, out: str, **section) -> subprocess.CompletedProcess:
    pl.DataFrame({"id": list(range(len(SENTENCES))), "sentence": SENTENCES}).write_parquet(
        tmp_path / "in.parquet"
    )
    params = {"generate": {"output_column": "paraphrase", "max_new_tokens": 6, "batch_size": 2, **section}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "dagster_project.stages.generate", "--params", str(tmp_path / "params.yaml")]
    cmd += ["--student", str(student), "--input", str(tmp_path / "in.parquet"), "--out", str(tmp_path / out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)


def test_n_candidates_per_row_seeded(tmp_path: Path, student: Path) -> None:
    sampling = {"temperature": 1.5, "top_p": 0.95, "num_candidates": 3, "seed": 7}
    for out in ("a", "b"):
        proc = _generate(tmp_path, student, out, **sampling)
        assert proc.returncode == 0, proc.stderr
    df = pl.read_parquet(tmp_path / "a/predictions.parquet")
    assert df.height == 15 and df.columns == ["id", "sentence", "candidate", "paraphrase"]
    assert (
        df.group_by("id").agg(pl.col("candidate").sort()).sort("id")["candidate"].to_list() == [[0, 1, 2]] * 5
    )
    assert df.equals(pl.read_parquet(tmp_path / "b/predictions.parquet"))  # same seed: same candidates
    stats = json.loads((tmp_path / "a/stats.json").read_text())
    assert stats["num_candidates"] == 3 and stats["input_rows"] == 5 and stats["distinct_per_row"] > 1
    proc = _generate(tmp_path, student, "c", **{**sampling, "seed": 8})
    assert not df.equals(pl.read_parquet(tmp_path / "c/predictions.parquet"))


def test_greedy_default_keeps_one_row_per_input(tmp_path: Path, student: Path) -> None:
    proc = _generate(tmp_path, student, "g")
    assert proc.returncode == 0, proc.stderr
    df = pl.read_parquet(tmp_path / "g/predictions.parquet")
    assert df.height == 5 and df.columns == ["id", "sentence", "paraphrase"]


def test_several_candidates_need_a_temperature() -> None:
    with pytest.raises(ValueError, match="set temperature > 0"):
        Params.model_validate({"num_candidates": 4}, strict=False)
