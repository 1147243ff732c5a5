"""The bad-input battery: each malformed input fails with its exit status and one `error:` line naming the
thing and the fix, before any teacher call or training where the input is known up front (`distill check`
and each stage's own params check run before any work), and nothing finished is lost.

Recipe cases edit a committed copy of this repo (real DVC), teacher cases run the synthesize stage
against a real local HTTP endpoint.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml
from helpers import copy_repo, synthesize_recipe_params

from dagster_project.evaluation.gold_schema import read_gold
from dagster_project.evaluation.scoring import score_systems
from dagster_project.evaluation.tasks import QA
from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.engine import TeacherEngine, TeacherRequest
from dagster_project.teacher.limits import EngineLimits
from dagster_project.teacher.prompts import load_prompt
from dagster_project.teacher.server import serve_in_thread

GOLD = "data/demo_world/gold_test.jsonl"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A committed copy of the repo; each test restores what it edits."""
    return copy_repo(tmp_path_factory.mktemp("battery"))


def _check(repo: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_TEACHER", "OPENAI"))}
    return subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "check", "--recipe", "default", "--project", str(repo)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _report(proc: subprocess.CompletedProcess) -> None:
    """One row of the battery's table (shown with `pytest -s`): case, exit status, first error line."""
    case = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    print(f"\nBATTERY | {case} | {proc.returncode} | {_first_error(proc) or '(ok)'}")


def _first_error(proc: subprocess.CompletedProcess) -> str:
    return next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip())


class _Edit:
    """Overwrite files of the repo copy for one test; put them back afterwards."""

    def __init__(self, repo: Path, files: dict[str, str]):
        self.repo, self.files = repo, files
        self.saved = {rel: (repo / rel).read_text() if (repo / rel).exists() else None for rel in files}

    def __enter__(self) -> "_Edit":
        for rel, text in self.files.items():
            (self.repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / rel).write_text(text)
        return self

    def __exit__(self, *exc: object) -> None:
        for rel, text in self.saved.items():
            if text is None:
                (self.repo / rel).unlink()
            else:
                (self.repo / rel).write_text(text)


def _gold(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


ROW = {"id": "g1", "context": "Ostra lies on the Silver River.", "question": "Where is Ostra?"}


def _params(repo: Path, **evaluate) -> str:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"].update(evaluate)
    return yaml.safe_dump(params, sort_keys=False)


# ------------------------------------------------------------------------------- gold file (item 1, 4)


def test_squad_answers_list_is_accepted_and_never_scored_against_nothing(repo):
    squad = {**ROW, "answers": {"text": ["the Silver River", "Silver River"], "answer_start": [15, 19]}}
    with _Edit(repo, {GOLD: _gold([squad])}):
        proc = _check(repo)
        _report(proc)
        rows = read_gold(repo / GOLD, "qa")
    assert proc.returncode == 0, proc.stderr
    assert rows[0]["answer"] == ["the Silver River", "Silver River"]
    # The harm of issue 17: an empty prediction scored against an empty reference was an exact match.
    task = QA()
    metrics, _ = score_systems(task, task.items(rows), {"student": [""], "baseline": ["Silver River"]})
    assert metrics["student"]["exact_match"] == 0.0 and metrics["baseline"]["exact_match"] == 1.0


@pytest.mark.parametrize(
    "rows, names",
    [
        ([ROW], ["gold_test.jsonl:1", "no reference column 'answer'", "evaluate.reference_column"]),
        (
            [{**ROW, "answers": {"text": [], "answer_start": []}}],
            ["gold_test.jsonl:1", "'answer' is empty", "drop the row"],
        ),
        ([{**ROW, "answer": "x"}, "{not json"], ["gold_test.jsonl:2", "not valid JSON", "JSON lines"]),
        (
            [{"id": "g1", "question": "Where is Ostra?", "answer": "Silver River"}],
            ["gold_test", "{context}", "prompt_format"],
        ),
    ],
    ids=["no-reference", "squad2-unanswerable", "not-json", "no-context-column"],
)
def test_bad_gold_file_fails_before_any_work(repo, rows, names):
    with _Edit(repo, {GOLD: _gold(rows)}):
        proc = _check(repo)
        _report(proc)
    assert proc.returncode == 2, proc.stderr
    first = _first_error(proc)
    assert "evaluate.gold_test" in proc.stderr and "Traceback" not in proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)
    assert first.startswith("error:")


def test_a_bare_dvc_repro_finds_a_bad_gold_file_before_synthesis(repo):
    """The synthesize stage, as `dvc repro` runs it, checks the gold set against the student's prompt
    format before any teacher call: the problem is not found only when evaluate starts."""
    no_context = {"id": "g1", "question": "Where is Ostra?", "answer": "Silver River"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_", "OPENAI"))}
    cmd = [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", "params.yaml"]
    cmd += ["--input", "assets/corpus/grounding.parquet", "--out", "assets/early_check"]
    with _Edit(repo, {GOLD: _gold([no_context])}):
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env, timeout=300)
        _report(proc)
    assert proc.returncode == 2, proc.stderr
    assert _first_error(proc).startswith("error: evaluate.gold_test")
    assert "{context}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (repo / "assets/early_check").exists()


def test_coqa_gold_is_accepted_for_multi_turn(tmp_path):
    coqa = {
        "id": "c1",
        "story": "Ostra lies on the Silver River. It has a mill.",
        "questions": ["Where is Ostra?", "What does it have?"],
        "answers": {"input_text": ["on the Silver River", "a mill"], "answer_start": [10, 37]},
    }
    (tmp_path / "coqa.jsonl").write_text(json.dumps(coqa) + "\n")
    rows = read_gold(tmp_path / "coqa.jsonl", "multi_turn_qa")
    assert rows[0]["context"].startswith("Ostra") and rows[0]["turns"][1] == {
        "question": "What does it have?",
        "answer": "a mill",
    }


# ---------------------------------------------------------------------------- prompts (item 4, 8)


def test_reference_prompt_with_a_variable_evaluate_does_not_provide(repo):
    prompt = (repo / "prompts/reference_answer.yaml").read_text().replace("{{ question }}", "{{ query }}")
    edits = {"prompts/reference_answer.yaml": prompt, "params.yaml": _params(repo, teacher_reference=True)}
    with _Edit(repo, edits):
        proc = _check(repo)
        _report(proc)
    assert proc.returncode == 2
    assert "evaluate.reference_prompt" in proc.stderr and "'query'" in proc.stderr
    assert "context, question only" in proc.stderr


# ------------------------------------------------------------------------------------- deps (item 3)


def test_a_source_not_among_the_stage_deps(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["retrieve"]["sources"].append({"path": "data/extra.jsonl", "format": "jsonl"})
    edits = {"params.yaml": yaml.safe_dump(params, sort_keys=False), "data/extra.jsonl": '{"text": "x"}\n'}
    with _Edit(repo, edits):
        proc = _check(repo)
        _report(proc)
    assert proc.returncode == 2
    assert "retrieve.sources.1.path" in proc.stderr
    assert "add `- data/extra.jsonl` to the deps of stage 'retrieve'" in proc.stderr


def test_params_typo_names_the_key_and_the_closest(repo):
    text = (
        (repo / "params.yaml")
        .read_text()
        .replace("near_threshold: 95.0           #", "near_treshold: 95.0 #")
    )
    with _Edit(repo, {"params.yaml": text}):
        proc = _check(repo)
        _report(proc)
    assert (
        proc.returncode == 2
        and "dedup.near_treshold: unknown key. did you mean 'near_threshold'" in proc.stderr
    )


# --------------------------------------------------------------------------- teacher stage (item 5, 8)


class _Unauthorized(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).calls += 1
        body = json.dumps({"error": {"message": "Incorrect API key provided"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stage_dir(tmp_path) -> Path:
    synthesize_recipe_params(tmp_path, teacher_model="teacher-model", constants={"count": 2})
    pl.DataFrame({"passage_id": ["p1"], "text": ["Ostra lies on the Silver River."]}).write_parquet(
        tmp_path / "grounding.parquet"
    )
    return tmp_path


def _synthesize(root: Path, url: str | None, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_", "OPENAI"))}
    base |= {"DISTILL_TEACHER_CACHE_DIR": str(root / "cache"), **env}
    if url:
        base["DISTILL_TEACHER_BASE_URL"] = url
    cmd = [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", str(root / "params.yaml")]
    cmd += ["--input", str(root / "grounding.parquet"), "--out", str(root / "out")]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, timeout=300)


def test_a_401_is_one_line_with_the_fix_and_debug_shows_the_traceback(stage_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        proc = _synthesize(stage_dir, url)
        _report(proc)
        debug = _synthesize(stage_dir, url, DISTILL_DEBUG="1")
    finally:
        server.shutdown()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]  # (the rest: a progress bar)
    assert len(errors) == 1, proc.stderr
    assert "refused the request (401)" in proc.stderr and "OPENAI_API_KEY" in proc.stderr
    assert not (stage_dir / "out").exists()
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_every_answer_rejected_fails_with_the_cause_and_writes_nothing(stage_dir):
    with serve_in_thread(rate_malformed=1.0) as url:
        proc = _synthesize(stage_dir, str(url))
        _report(proc)
        served = url.stats["requests"]
    assert proc.returncode == 5 and "gave no example" in proc.stderr and "malformed_json" in proc.stderr
    assert "DISTILL_TEACHER_STRUCTURED_OUTPUT=1" in proc.stderr
    assert not (stage_dir / "out").exists()  # nothing locked as a success
    assert served == 3  # max_attempts answers, all cached: a rerun with the fix does not pay again
    assert len(ResponseCache(stage_dir / "cache", mode="read-write")) == 3


def test_no_endpoint_for_a_real_model_fails_before_any_call(stage_dir):
    proc = _synthesize(stage_dir, None)
    _report(proc)
    assert (
        proc.returncode == 2 and "DISTILL_TEACHER_BASE_URL" in proc.stderr and "Traceback" not in proc.stderr
    )


# ------------------------------------------------------------------------------- cache and replay (8, 9)


def test_a_cache_line_without_response_is_skipped_and_replay_needs_no_endpoint(stage_dir):
    with serve_in_thread() as url:
        assert _synthesize(stage_dir, str(url)).returncode == 0
    shard = next((stage_dir / "cache").glob("*.jsonl"))
    shard.write_text(shard.read_text() + json.dumps({"key": "0" * 64, "request": {}}) + "\n")
    (stage_dir / "out").rename(stage_dir / "first")
    replay = _synthesize(stage_dir, None, DISTILL_TEACHER_CACHE_MODE="replay")
    assert replay.returncode == 0, replay.stderr  # every answer cached: no endpoint needed
    first = pl.read_parquet(stage_dir / "first/examples.parquet")
    assert pl.read_parquet(stage_dir / "out/examples.parquet").equals(first)


# ------------------------------------------------------------------------------ endpoint (items 7, 8)


@pytest.mark.parametrize("transport", ["http", "aiohttp", "openai-sdk"])
def test_a_hanging_connect_is_retried_after_the_connect_timeout_and_named(tmp_path, transport):
    """A listen backlog that is full drops the SYN: without a connect timeout the request waits for the
    whole request timeout; with it, each attempt gives up after the connect timeout (every transport)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the backlog (never accepted)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    prompt = load_prompt(Path(__file__).resolve().parents[1] / "prompts/grounded_qa.yaml")
    request = TeacherRequest.from_prompt(prompt, model="teacher-model", seed=0, passage="Ostra.", count=1)
    eng = TeacherEngine(
        cache=ResponseCache(tmp_path),
        env={
            "DISTILL_TEACHER_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "DISTILL_TEACHER_TRANSPORT": transport,
        },
        limits=EngineLimits(connect_timeout_s=0.3, timeout_s=60),
        progress=False,
        max_retries=1,
        backoff_base_s=0.01,
        unreachable_after_s=0.0,
    )
    import time

    start = time.perf_counter()
    try:
        from dagster_project.teacher.mapping import run_requests

        with pytest.raises(Exception) as err:
            run_requests(eng, [request])
    finally:
        for s in [*fillers, listener]:
            s.close()
    assert time.perf_counter() - start < 10
    assert "connect timeout" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
