"""Stage `synthesize`: the teacher writes grounded question-answer pairs for every retrieved passage.

    python -m dagster_project.stages.synthesize --params params.yaml --corpus assets/corpus \
        --out assets/synthesized

Reads `<corpus>/grounding.parquet` (passage_id, query, rank, score, text), renders the prompt once per
distinct passage, runs every request through the teacher engine (cache, retries, validation), keeps the
pairs whose answer is a verbatim span of the passage, and writes `<out>/`:

- `examples.parquet`: id, passage_id, context, question, answer, teacher_model, request_id
- `rejects.parquet`: request_id, passage_id, attempt, reason, raw (every rejected sample or pair)
- `stats.json`: the engine counters (calls, cache hits, retries and their reasons, rejects by reason,
  429s, pause time, tokens in/out, wall time, estimated cost in USD per model from the price table)
  plus n_requests, n_examples, n_rejects

``--dry-run`` renders every request and prints (JSON) how many would miss the cache and their estimated
tokens and cost, sends nothing and writes nothing. With ``DISTILL_TEACHER_BUDGET_USD`` set, a run that
would pass the budget stops sending, keeps every finished response in the teacher cache and exits with
status 3 and a message; rerunning with a larger budget resumes from the cache.

The teacher cache (``.cache/teacher/``) is deliberately neither a dependency nor an output of this stage:
it only grows, and a bigger cache must not invalidate this stage or anything downstream. Share it through
the DVC remote as its own tracked folder (``dvc add .cache/teacher && dvc push``; elsewhere
``dvc pull .cache/teacher.dvc``). What the stage produces is fixed by its declared deps and params (the
requests are a function of them), so the cache only decides how many calls a run costs.
"""

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

from dagster_project.stages.common import atomic_output_dir, load_stage_params, stage_parser, write_json
from dagster_project.teacher.engine import (
    BudgetExceededError,
    TeacherEngine,
    TeacherRequest,
    TeacherResult,
    TeacherUnreachableError,
)
from dagster_project.teacher.prompts import load_prompt

RAW_MAX_CHARS = 2000
EXAMPLE_SCHEMA = {
    "id": pl.String,
    "passage_id": pl.String,
    "context": pl.String,
    "question": pl.String,
    "answer": pl.String,
    "teacher_model": pl.String,
    "request_id": pl.String,
}
REJECT_SCHEMA = {
    "request_id": pl.String,
    "passage_id": pl.String,
    "attempt": pl.Int64,
    "reason": pl.String,
    "raw": pl.String,
}


def example_id(passage_id: str, question: str) -> str:
    """A stable id for one example: sha256 of passage id and question, shortened."""
    return hashlib.sha256(f"{passage_id}\x1f{question}".encode()).hexdigest()[:16]


def _squash(text: str) -> str:
    return " ".join(text.split())


def is_verbatim_span(answer: str, passage: str) -> bool:
    """True when `answer` occurs in `passage` exactly, up to runs of whitespace."""
    answer = _squash(answer)
    return bool(answer) and answer in _squash(passage)


def load_passages(corpus: Path) -> pl.DataFrame:
    """Distinct grounding passages (first occurrence of each passage_id), in corpus order."""
    grounding = pl.read_parquet(corpus / "grounding.parquet")
    return grounding.select(pl.col("passage_id").cast(pl.String), pl.col("text")).unique(
        subset="passage_id", keep="first", maintain_order=True
    )


def collect(results: list[TeacherResult], teacher_model: str) -> tuple[list[dict], list[dict]]:
    """Split engine results into example rows and reject rows (rejected samples and rejected pairs)."""
    examples: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for res in results:
        passage_id, text = res.meta["passage_id"], res.meta["text"]
        for rej in res.rejects:
            rejects.append(
                {
                    "request_id": res.request_id,
                    "passage_id": passage_id,
                    "attempt": rej.attempt,
                    "reason": rej.reason,
                    "raw": rej.raw[:RAW_MAX_CHARS],
                }
            )
        if not res.ok:
            continue
        for pair in res.value["pairs"]:
            question, answer = pair["question"].strip(), pair["answer"].strip()
            ex_id = example_id(passage_id, question)
            reason = None
            if not is_verbatim_span(answer, text):
                reason = "answer_not_in_passage"
            elif ex_id in seen:
                reason = "duplicate_question"
            if reason:
                raw = json.dumps(pair, ensure_ascii=False)[:RAW_MAX_CHARS]
                rejects.append(
                    {
                        "request_id": res.request_id,
                        "passage_id": passage_id,
                        "attempt": res.attempt,
                        "reason": reason,
                        "raw": raw,
                    }
                )
                continue
            seen.add(ex_id)
            examples.append(
                {
                    "id": ex_id,
                    "passage_id": passage_id,
                    "context": text,
                    "question": question,
                    "answer": answer,
                    "teacher_model": teacher_model,
                    "request_id": res.request_id,
                }
            )
    return examples, rejects


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="assets/corpus", help="folder with grounding.parquet")
    parser.add_argument("--out", default="assets/synthesized", help="output folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="estimate calls, tokens and cost; send and write nothing"
    )
    args = parser.parse_args(argv)

    params = load_stage_params(args.params, "synthesize")
    prompt = load_prompt(params["prompt"])
    teacher_model = params["teacher_model"]
    count = params["questions_per_passage"]
    temperature = params["temperature"]
    seed = params["seed"]
    max_attempts = params["max_attempts"]

    passages = load_passages(Path(args.corpus))
    requests = [
        TeacherRequest.from_prompt(
            prompt,
            model=teacher_model,
            temperature=temperature,
            seed=seed,
            meta={"passage_id": row["passage_id"], "text": row["text"]},
            passage=row["text"],
            count=count,
        )
        for row in passages.iter_rows(named=True)
    ]

    engine = TeacherEngine(max_attempts=max_attempts)
    if args.dry_run:
        estimate = {"stage": "synthesize", "backend": engine.backend_kind, **engine.estimate(requests)}
        print(json.dumps(estimate, indent=2))
        cost = estimate["cost_usd_max"]
        print(
            f"synthesize --dry-run: {estimate['requests']} requests, {estimate['cache_hits']} cached, "
            f"{estimate['calls']} calls, ~{estimate['tokens_in']} tokens in, <= {estimate['tokens_out_max']} "
            f"tokens out, <= {'unknown (no price)' if cost is None else f'${cost:.4f}'}",
            file=sys.stderr,
        )
        return
    try:
        results = engine.run(requests)
    except BudgetExceededError as exc:
        print(f"synthesize: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    except TeacherUnreachableError as exc:
        print(
            f"synthesize: error: {exc}. Nothing written; every answer received is cached - check the "
            "endpoint (DISTILL_TEACHER_BASE_URL) and rerun to resume.",
            file=sys.stderr,
        )
        raise SystemExit(4) from None
    finally:
        engine.cache.close()
    unreachable = [r for r in results if any(j.reason.startswith("unavailable:") for j in r.rejects)]
    if unreachable:
        # An outage is not a verdict on the data: writing the output now would freeze an incomplete set
        # into dvc.lock. Every finished answer is in the cache, so a rerun resumes where this one stopped.
        print(
            f"synthesize: error: {len(unreachable)} of {len(requests)} requests could not reach the teacher "
            f"({engine.backend_kind}); last error: {unreachable[-1].rejects[-1].reason}. Nothing written; "
            "every answer received is cached - check the endpoint (DISTILL_TEACHER_BASE_URL) and rerun to "
            "resume.",
            file=sys.stderr,
        )
        raise SystemExit(4)
    examples, rejects = collect(results, teacher_model)

    stats = {
        **engine.counters.as_dict(),
        "backend": engine.backend_kind,
        "n_requests": len(requests),
        "n_examples": len(examples),
        "n_rejects": len(rejects),
    }
    with atomic_output_dir(args.out) as tmp:
        pl.DataFrame(examples, schema=EXAMPLE_SCHEMA).write_parquet(tmp / "examples.parquet")
        pl.DataFrame(rejects, schema=REJECT_SCHEMA).write_parquet(tmp / "rejects.parquet")
        write_json(tmp / "stats.json", stats)
    print(
        f"synthesize: {len(requests)} passages -> {len(examples)} examples, {len(rejects)} rejects "
        f"({engine.counters.calls} teacher calls, {engine.counters.cache_hits} cache hits)"
    )


if __name__ == "__main__":
    main()
