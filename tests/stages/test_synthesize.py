import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from helpers import synthesize_recipe_params

from dagster_project.stages import common, synthesize
from dagster_project.stages.common import RUN_FACT_KEYS, read_run_facts
from dagster_project.teacher.server import serve_in_thread

PASSAGES = {
    "p1": "Alice Smith founded Brightwater in 1921. The town lies on the Silver River.",
    "p2": "The capital of Norland is Eastport. Eastport has 40,000 people.",
}


class HalfRightTeacher:
    """One verbatim answer, one made-up answer, one duplicate question per passage."""

    def chat(self, messages, *, model="offline-teacher", temperature=0.0, seed=None, max_tokens=None):
        passage = messages[-1]["content"].split("<passage>\n", 1)[1].split("\n</passage>", 1)[0]
        first = passage.split()[0]
        pairs = [
            {"question": "What is the first word of the passage?", "answer": first},
            {"question": "What is the first word of the passage?", "answer": first},
            {"question": "What is the colour of the sky?", "answer": "blue"},
        ]
        return {"content": json.dumps({"pairs": pairs}), "finish_reason": "stop", "usage": {}}


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """A params.yaml and a corpus in tmp_path; the teacher cache in tmp_path too."""
    synthesize_recipe_params(tmp_path, constants={"count": 3})
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [("p1", "q a", 0), ("p2", "q a", 1), ("p1", "q b", 0)]  # p1 retrieved by two queries
    pl.DataFrame(
        {
            "passage_id": [r[0] for r in rows],
            "query": [r[1] for r in rows],
            "rank": [r[2] for r in rows],
            "score": [1.0, 0.5, 0.9],
            "text": [PASSAGES[r[0]] for r in rows],
        }
    ).write_parquet(corpus / "grounding.parquet")
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILL_TEACHER_CACHE_MODE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("DISTILL_TEACHER_BASE_URL", raising=False)
    return tmp_path


def run(recipe: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    out = recipe / "synthesized"
    grounding = str(recipe / "corpus" / "grounding.parquet")
    synthesize.main(["--params", str(recipe / "params.yaml"), "--input", grounding, "--out", str(out)])
    # stats.json (a DVC output) holds no run facts; the engine's calls, cache hits and timings are
    # recorded beside the output folder (stages.common.read_run_facts)
    stats = json.loads((out / "stats.json").read_text())
    assert not set(stats) & RUN_FACT_KEYS, "run facts must stay out of the DVC-tracked output"
    stats |= read_run_facts(out)["stats.json"]
    return pl.read_parquet(out / "examples.parquet"), pl.read_parquet(out / "rejects.parquet"), stats


def test_reads_exactly_its_params_section(recipe, monkeypatch):
    log = recipe / "access.jsonl"
    params = recipe / "params.yaml"
    grounding = recipe / "corpus" / "grounding.parquet"
    subprocess.run(
        [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", str(params), "--input",
         str(grounding), "--out", str(recipe / "out")],
        check=True, env={**os.environ, common.PARAMS_ACCESS_LOG_ENV: str(log)},
    )  # fmt: skip
    entry = json.loads(log.read_text())
    section = yaml.safe_load(params.read_text())["synthesize"]
    assert entry["section"] == "synthesize" and entry["accessed"] == sorted(
        f"synthesize.{k}" for k in section
    )


def test_examples_rejects_and_stats_over_http(recipe, monkeypatch):
    with serve_in_thread(teacher=HalfRightTeacher()) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        examples, rejects, stats = run(recipe)
        assert url.stats["requests"] == 2  # one request per distinct passage
    assert examples["passage_id"].to_list() == ["p1", "p2"]
    assert examples["answer"].to_list() == ["Alice", "The"]
    assert examples["context"].to_list() == [PASSAGES["p1"], PASSAGES["p2"]]
    assert examples["id"].n_unique() == 2 and set(examples["teacher_model"]) == {"offline-teacher"}
    assert sorted(rejects["reason"].to_list()) == ["answer_not_in_passage"] * 2 + ["duplicate_question"] * 2
    assert set(rejects["request_id"]) == set(examples["request_id"])
    assert stats["n_requests"] == 2 and stats["n_examples"] == 2 and stats["n_rejects"] == 4
    assert stats["calls"] == 2 and stats["backend"] == "openai-compatible"

    # Unchanged inputs: the rebuild is free and identical.
    first = {f: (recipe / "synthesized" / f).read_bytes() for f in ("examples.parquet", "stats.json")}
    examples2, _, stats2 = run(recipe)
    again = {f: (recipe / "synthesized" / f).read_bytes() for f in ("examples.parquet", "stats.json")}
    assert again == first, "an unchanged rerun (now from the cache) must write the same bytes"
    assert stats2["calls"] == 0 and stats2["cache_hits"] == 2
    assert examples2.equals(examples)


def test_offline_teacher_in_process(recipe):
    pytest.importorskip("dagster_project.teacher.offline")
    examples, rejects, stats = run(recipe)
    assert stats["backend"] == "offline" and stats["n_requests"] == 2
    assert examples.height > 0
    for row in examples.iter_rows(named=True):
        assert row["answer"] in row["context"]
    assert rejects.columns == ["request_id", "passage_id", "attempt", "reason", "raw"]


class PricedTeacher(HalfRightTeacher):
    """HalfRightTeacher that reports token usage, for cost accounting."""

    def chat(self, messages, **kwargs):
        answer = super().chat(messages, **kwargs)
        return {**answer, "usage": {"prompt_tokens": 100, "completion_tokens": 50}}


@pytest.fixture
def priced(recipe, monkeypatch):
    """A price table with an expensive model (USD 1,000 per million tokens), used by the recipe."""
    (recipe / "prices.yaml").write_text("models:\n  pricey: {input: 1000.0, output: 1000.0}\n")
    monkeypatch.setenv("DISTILL_TEACHER_PRICES", str(recipe / "prices.yaml"))
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params["synthesize"]["teacher_model"] = "pricey"
    (recipe / "params.yaml").write_text(yaml.safe_dump(params))
    return recipe


def test_stats_carry_tokens_and_cost(priced, monkeypatch):
    with serve_in_thread(teacher=PricedTeacher()) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        _, _, stats = run(priced)
    assert stats["tokens_in"] == 200 and stats["tokens_out"] == 100
    assert stats["cost_usd"] == pytest.approx(0.3)  # 300 tokens at USD 1,000 per million
    assert stats["by_model"]["pricey"] == {"calls": 2, "tokens_in": 200, "tokens_out": 100, "cost_usd": 0.3}
    assert {"retries", "retry_reasons", "rejects", "rate_limited", "wall_s"} <= stats.keys()


def test_dry_run_estimates_and_sends_nothing(priced, monkeypatch, capsys):
    argv = ["--params", str(priced / "params.yaml"), "--input", str(priced / "corpus" / "grounding.parquet")]
    with serve_in_thread(teacher=PricedTeacher()) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        synthesize.main([*argv, "--out", str(priced / "dry"), "--dry-run"])
        before = json.loads(capsys.readouterr().out)
        run(priced)
        capsys.readouterr()
        synthesize.main([*argv, "--out", str(priced / "dry"), "--dry-run"])
        after = json.loads(capsys.readouterr().out)
        assert url.stats["requests"] == 2  # only the real run called the teacher
    assert not (priced / "dry").exists()
    assert before["requests"] == 2 and before["calls"] == 2 and before["cache_hits"] == 0
    assert before["tokens_out_max"] == 2 * 600 and before["cost_usd_max"] > 1.0
    assert after["calls"] == 0 and after["cache_hits"] == 2 and after["cost_usd_max"] == 0


def test_budget_cap_stops_cleanly_and_resumes(priced, monkeypatch, capsys):
    with serve_in_thread(teacher=PricedTeacher()) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        monkeypatch.setenv("DISTILL_TEACHER_BUDGET_USD", "1.0")  # one call's worst case (~USD 0.77) fits
        with pytest.raises(SystemExit) as exit_info:
            run(priced)
        assert exit_info.value.code == 3
        assert "budget cap reached" in capsys.readouterr().err
        assert url.stats["requests"] == 1 and not (priced / "synthesized").exists()
        monkeypatch.setenv("DISTILL_TEACHER_BUDGET_USD", "100")
        examples, _, stats = run(priced)
        assert url.stats["requests"] == 2  # the finished call came from the cache
    assert stats["calls"] == 1 and stats["cache_hits"] == 1 and examples.height == 2


def test_budget_with_an_unpriced_model_is_an_error(recipe, monkeypatch, capsys):
    with serve_in_thread(teacher=PricedTeacher()) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        monkeypatch.setenv("DISTILL_TEACHER_PRICES", str(recipe / "none.yaml"))
        (recipe / "none.yaml").write_text("models: {}\n")
        monkeypatch.setenv("DISTILL_TEACHER_BUDGET_USD", "5")
        with pytest.raises(SystemExit) as exit_info:
            run(recipe)
        assert exit_info.value.code == 2 and "no price" in capsys.readouterr().err
        assert url.stats["requests"] == 0


def test_an_unreachable_teacher_fails_the_stage_and_the_rerun_resumes(recipe, monkeypatch, capsys):
    import functools

    from dagster_project.teacher.engine import TeacherEngine

    fast = functools.partial(TeacherEngine, max_retries=1, backoff_base_s=0.01)
    monkeypatch.setattr(synthesize, "TeacherEngine", fast)
    with serve_in_thread(teacher=HalfRightTeacher(), rate_500=1.0) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        with pytest.raises(SystemExit) as exit_info:
            run(recipe)
    assert exit_info.value.code == 4
    err = capsys.readouterr().err
    assert "2 of 2 requests could not reach the teacher" in err and "http 500" in err and "rerun" in err
    assert not (recipe / "synthesized").exists()  # an incomplete set is never written as the output

    with serve_in_thread(teacher=HalfRightTeacher()) as url:  # the endpoint is back
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        examples, _, stats = run(recipe)
    assert stats["n_examples"] == 2 and examples["answer"].to_list() == ["Alice", "The"]


def test_a_dead_endpoint_fails_the_stage_fast(recipe, monkeypatch, capsys):
    import functools
    import socket

    from dagster_project.teacher.engine import TeacherEngine

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fast = functools.partial(TeacherEngine, max_retries=1, backoff_base_s=0.01, unreachable_after_s=0.0)
    monkeypatch.setattr(synthesize, "TeacherEngine", fast)
    monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(SystemExit) as exit_info:
        run(recipe)
    assert exit_info.value.code == 4
    err = capsys.readouterr().err
    assert "has not answered for" in err and "connection error" in err and "rerun to resume" in err
    assert not (recipe / "synthesized").exists()


def _set(recipe: Path, **changes) -> None:
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params["synthesize"].update(changes)
    (recipe / "params.yaml").write_text(yaml.safe_dump(params))


def test_bad_columns_and_empty_input_fail_before_any_call(recipe, capsys):
    _set(recipe, id_columns=["passage_id", "questoin"])
    with pytest.raises(SystemExit, match=r"id_columns \['questoin'\] are neither carried columns"):
        run(recipe)
    _set(recipe, id_columns=["passage_id", "question"], seed_by=["passage"])
    with pytest.raises(SystemExit, match=r"has no column\(s\) \['passage'\]"):
        run(recipe)
    _set(recipe, seed_by=[])
    pl.DataFrame(schema={"passage_id": pl.String, "text": pl.String}).write_parquet(
        recipe / "corpus" / "grounding.parquet"
    )
    with pytest.raises(SystemExit, match="has no rows to render"):
        run(recipe)


def test_shots_are_drawn_per_request_and_counted(recipe, tmp_path):
    shots = recipe / "shots.jsonl"
    shots.write_text(
        "".join(json.dumps({"passage_id": p, "example": f"e{p}"}) + "\n" for p in ("p1", "p2", "p3"))
    )
    _set(
        recipe,
        samples=2,
        shots={"file": str(shots), "k": 2, "columns": ["example"], "exclude": {"passage_id": "passage_id"}},
    )
    prompt = recipe / "shots_prompt.yaml"
    prompt.write_text(
        (Path(synthesize.__file__).parents[2] / "prompts" / "grounded_qa.yaml")
        .read_text()
        .replace("<passage>", "{% for e in examples %}[{{ e.example }}]{% endfor %}<passage>", 1)
    )
    _set(recipe, prompt=str(prompt))
    _, _, stats = run(recipe)
    assert stats["shots_per_request"] == {"2": 4}  # 2 passages x 2 samples, 2 of the 2 other passages each


def test_a_typo_in_a_file_param_is_named_before_work(recipe):
    _set(recipe, files={"label_info": "labels_nope.yaml"})
    proc = subprocess.run(
        [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", str(recipe / "params.yaml"),
         "--input", str(recipe / "corpus" / "grounding.parquet"), "--out", str(recipe / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (
        proc.returncode == 2
        and "synthesize.files.label_info: file 'labels_nope.yaml' does not exist" in proc.stderr
    )


def _run_input(recipe: Path, path: Path) -> pl.DataFrame:
    out = recipe / "from_file"
    synthesize.main(["--params", str(recipe / "params.yaml"), "--input", str(path), "--out", str(out)])
    return pl.read_parquet(out / "examples.parquet")


def test_input_rows_without_a_value_are_named_by_line_or_take_a_default(recipe):
    table = recipe / "rows.jsonl"
    rows = [{"passage_id": "p1", "text": PASSAGES["p1"]}, {"passage_id": "p2", "text": None}]
    table.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")  # a blank line 2
    with pytest.raises(SystemExit, match=r"rows\.jsonl:3 has no value for 'text' \(1 row\(s\)"):
        _run_input(recipe, table)
    _set(recipe, defaults={"text": PASSAGES["p2"]})
    assert set(_run_input(recipe, table)["passage_id"]) == {"p1", "p2"}


def test_a_malformed_jsonl_line_is_named_and_csv_is_read(recipe):
    table = recipe / "broken.jsonl"
    table.write_text(
        json.dumps({"passage_id": "p1", "text": PASSAGES["p1"]}) + '\n{"passage_id": "p2", "te\n'
    )
    with pytest.raises(
        SystemExit, match=r"broken\.jsonl: cannot read it as a table: line 2 is not valid JSON"
    ):
        _run_input(recipe, table)
    csv_table = recipe / "rows.csv"
    pl.DataFrame({"passage_id": ["p1", "p2"], "text": [PASSAGES["p1"], PASSAGES["p2"]]}).write_csv(csv_table)
    assert set(_run_input(recipe, csv_table)["passage_id"]) == {"p1", "p2"}


class SloppyJSONTeacher:
    """Answers wrapped in prose and a code fence, with a trailing comma; or no JSON at all for p2."""

    def chat(self, messages, *, model="offline-teacher", temperature=0.0, seed=None, max_tokens=None):
        passage = messages[-1]["content"].split("<passage>\n", 1)[1].split("\n</passage>", 1)[0]
        if passage.startswith("The capital"):
            return {"content": "Sorry, here are no pairs.", "finish_reason": "stop", "usage": {}}
        first = passage.split()[0]
        pair = '{"question": "What is the first word of the passage?", "answer": "' + first + '"}'
        body = '{"pairs": [' + pair + ",],}"
        return {
            "content": f"Here you go:\n```json\n{body}\n```\nEnjoy!",
            "finish_reason": "stop",
            "usage": {},
        }


def test_sloppy_json_over_http_is_repaired_and_counted(recipe, monkeypatch):
    with serve_in_thread(teacher=SloppyJSONTeacher()) as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        examples, rejects, stats = run(recipe)
    assert examples["answer"].to_list() == ["Alice"]
    assert stats["json_repairs"] == {
        "answers_repaired": 1, "code_fence": 1, "prose_around": 1, "trailing_comma": 1,
    }  # fmt: skip
    assert set(rejects["reason"]) == {"malformed_json"}  # every sample for p2; kept with its raw answer
