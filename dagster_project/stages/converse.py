"""Stage kind `converse`: CoDi conversations - sampled paths through a conversation graph, synthesized
turn by turn by the teacher, each grounded on one retrieved passage.

    python -m dagster_project.stages.converse --params params.yaml [--section converse] \
        --input assets/corpus/grounding.parquet --out assets/conversations

The conversation graph (`spec`, a YAML file: `dagster_project/synthesis/conversation_graph.py`) is
validated before any work, with its prompts (each must load; offline, each needs a handler). Conversation
i takes passage i of the input's distinct passages (cycling when `conversations` is larger) and a path
of turn types drawn from the graph's Markov chain with a generator seeded by (`seed`, i); each turn's
phenomena are drawn from the same generator. Synthesis goes turn by turn: at depth d, every conversation
still running sends one request through the teacher primitive (`teacher/mapping.py`: cache, retries,
schema) with the passage, the history so far ("Q: ..." / "A: ..." lines), the turn type, its phenomena,
and the instruction (the node's augmentation plus each phenomenon's). Each answer is checked by the
node's `answer` kind: `span` (a verbatim span of the passage), `evidence` (a checked paraphrase: the
evidence is a verbatim span and holds every word of the answer), `yes_no` ("yes"/"no" with a span as
evidence) or `refusal` (exactly the spec's refusal); an answerable node answered with the refusal fails
too. A failed turn ends its conversation there (the reject is kept with its reason); a conversation with
fewer than `length.min_turns` turns is a reject. Writes `<out>/`:

- `conversations.parquet`: id, passage_id, context (the passage), path (the sampled turn types),
  turn_types (the realised ones), turns (list of {question, answer, evidence, turn_type, phenomena}),
  n_turns, stopped (why it ended early, or "")
- `train.parquet`, `val.parquet`: the conversations split by passage (`val_fraction`, seeded), for the
  train kind's `conversation` option
- `turns/train.parquet`, `turns/val.parquet`: the same, one row per turn (context = passage + history as
  `student/conversation.py` renders it, question, answer, turn, turn_type): what the student sees
- `rejects.parquet`: conversation, turn, turn_type, reason, raw
- `stats.json`: the engine counters, requests, conversations, turns, rejects by reason

The gold conversations are about passages outside the corpus (the demo's gold set), so no
decontamination step runs here; with your own gold set, keep its passages out of the retrieval sources.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from dagster_project.params_schema import DataFile, FileRef, StageParams, _check_file
from dagster_project.stages.common import (
    atomic_output_dir,
    data_facts,
    exit_on_teacher_error,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
)
from dagster_project.synthesis.conversation_graph import (
    Spec,
    SpecError,
    conversation_rng,
    load_spec,
    sample_path,
    sample_phenomena,
)


class Params(StageParams):
    """`converse`: the conversation graph, how many conversations, the teacher and the split."""

    spec: DataFile  # the conversation graph (YAML), relative to the params file
    conversations: int = Field(default=100, gt=0)  # one passage each (cycling over the input's passages)
    teacher_model: str = "offline-teacher"
    temperature: float = Field(default=0.7, ge=0, le=2)
    seed: int = 0
    max_attempts: int = Field(default=3, ge=1)
    passage_column: str = "text"
    passage_id_column: str = "passage_id"
    val_fraction: float = Field(default=0.1, ge=0, lt=1)

    def check_files(self, root: Path, section: str) -> list[str]:
        problems = super().check_files(root, section)
        if problems:
            return problems
        try:
            spec = load_spec(root / self.spec, root, label=self.spec)
        except SpecError as exc:
            return [f"{section}.spec: {line}" for line in str(exc).splitlines()]
        for prompt in sorted({n.prompt for n in spec.nodes.values()}):
            problems += _check_file(
                FileRef("prompt"), prompt, root, f"{section}.spec ({self.spec}) prompt", self
            )
        return problems


WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def check_answer(kind: str, turn: dict[str, Any], passage: str, refusal: str) -> str | None:
    """Why a turn's answer is not supported as its node asks (None when it is); see the module doc."""
    from dagster_project.teacher.mapping import is_verbatim_span

    answer, evidence = str(turn.get("answer", "")).strip(), str(turn.get("evidence", "")).strip()
    refused = _words(answer) == _words(refusal)
    if kind == "refusal":
        return None if refused else "not_refused"
    if refused:
        return "refused_answerable"
    if kind == "span":
        return None if is_verbatim_span(answer, passage) else "answer_not_in_passage"
    if not is_verbatim_span(evidence, passage):
        return "evidence_not_in_passage"
    if kind == "yes_no":
        return None if answer.lower().rstrip(".") in ("yes", "no") else "not_yes_no"
    missing = set(_words(answer)) - set(_words(evidence))
    return None if not missing else "answer_not_in_evidence"


def history_text(turns: list[dict[str, Any]]) -> str:
    """The history as the prompt shows it: a "Q: ..." and an "A: ..." line per turn."""
    return "\n".join(f"Q: {t['question']}\nA: {t['answer']}" for t in turns)


def plan(spec: Spec, passages: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """The sampled conversations: passage, path and each turn's phenomena (no teacher call)."""
    planned = []
    for i in range(n):
        rng = conversation_rng(seed, i)
        path = sample_path(spec, rng)
        planned.append(
            {
                "index": i,
                "passage": passages[i % len(passages)],
                "path": path,
                "phenomena": [sample_phenomena(spec, node, rng, t + 1) for t, node in enumerate(path)],
            }
        )
    return planned


def _split(passage_id: str, seed: int, val_fraction: float) -> str:
    import hashlib

    h = int(hashlib.sha256(f"{seed}\x1f{passage_id}".encode()).hexdigest()[:8], 16) / 16**8
    return "val" if h < val_fraction else "train"


def synthesize(
    spec: Spec, planned: list[dict[str, Any]], params: Params, root: Path, engine: Any
) -> tuple[list, list, int]:
    """Run the turns depth by depth; returns (conversations, rejects, requests sent)."""
    from dagster_project.teacher.mapping import build_requests, collect, run_requests
    from dagster_project.teacher.prompts import load_prompt

    prompts = {p: load_prompt(root / p) for p in {n.prompt for n in spec.nodes.values()}}
    done: dict[int, list[dict[str, Any]]] = {c["index"]: [] for c in planned}
    stopped: dict[int, str] = {}
    rejects: list[dict[str, Any]] = []
    n_requests = 0
    for depth in range(spec.max_turns):
        active = [c for c in planned if len(c["path"]) > depth and c["index"] not in stopped]
        for prompt_path, prompt in prompts.items():
            rows = []
            for c in active:
                node = spec.nodes[c["path"][depth]]
                if node.prompt != prompt_path:
                    continue
                phen = c["phenomena"][depth]
                instruction = " ".join([node.augmentation, *(spec.phenomena[p].augmentation for p in phen)])
                rows.append(
                    {
                        "conversation": c["index"],
                        "turn": depth,
                        "passage": c["passage"][params.passage_column],
                        "history": history_text(done[c["index"]]),
                        "turn_type": node.name,
                        "phenomena": ", ".join(phen),
                        "refusal": spec.refusal,
                        "instruction": instruction,
                    }
                )
            if not rows:
                continue
            variables = {
                k: k for k in ("passage", "history", "turn_type", "phenomena", "refusal", "instruction")
            }
            requests = build_requests(
                prompt,
                rows,
                model=params.teacher_model,
                variables=variables,
                temperature=params.temperature,
                seed=params.seed,
                seed_by=["conversation", "turn"],
            )
            n_requests += len(requests)
            got, bad = collect(prompt, run_requests(engine, requests), carry={"conversation": "conversation"})
            by_conv = {r["conversation"]: r for r in got}
            for rej in bad:
                i = rej["conversation"]
                stopped.setdefault(i, rej["reason"].split(":", 1)[0])
                rejects.append(
                    {"conversation": i, "turn": depth, "reason": rej["reason"], "raw": rej.get("raw", "")}
                )
            for row in rows:
                i = row["conversation"]
                if i in stopped:
                    continue
                turn = by_conv.get(i)
                if turn is None:
                    stopped[i] = "no_answer"
                    continue
                c = planned[i]
                node = spec.nodes[c["path"][depth]]
                reason = check_answer(node.answer, turn, row["passage"], spec.refusal)
                if reason:
                    stopped[i] = reason
                    raw = json.dumps(
                        {k: turn.get(k) for k in ("question", "answer", "evidence")}, ensure_ascii=False
                    )
                    rejects.append({"conversation": i, "turn": depth, "reason": reason, "raw": raw})
                    continue
                answer = spec.refusal if node.answer == "refusal" else str(turn["answer"]).strip()
                done[i].append(
                    {
                        "question": str(turn["question"]).strip(),
                        "answer": answer,
                        "evidence": str(turn.get("evidence", "")).strip(),
                        "turn_type": node.name,
                        "phenomena": c["phenomena"][depth],
                    }
                )
    conversations = []
    for c in planned:
        i, turns = c["index"], done[c["index"]]
        passage = c["passage"]
        record = {
            "id": f"conv-{i:05d}",
            "passage_id": str(passage[params.passage_id_column]),
            "context": passage[params.passage_column],
            "path": c["path"],
            "turn_types": [t["turn_type"] for t in turns],
            "turns": turns,
            "n_turns": len(turns),
            "stopped": stopped.get(i, ""),
        }
        if len(turns) < spec.min_turns:
            rejects.append(
                {
                    "conversation": i,
                    "turn": len(turns),
                    "reason": "too_short",
                    "raw": json.dumps(record["turn_types"]),
                }
            )
            continue
        conversations.append(record)
    return conversations, rejects, n_requests


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    import polars as pl

    from dagster_project.student.conversation import expand_conversations
    from dagster_project.synthesis.shots import read_table
    from dagster_project.teacher.engine import TeacherEngine

    parser = stage_parser(__doc__.splitlines()[0], kind="converse")
    parser.add_argument(
        "--input", required=True, help="the passages (the retrieve stage's grounding.parquet)"
    )
    parser.add_argument("--out", default="assets/conversations", help="output folder")
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    root = Path(args.params).parent
    try:
        spec = load_spec(root / params.spec, root, label=params.spec)
    except SpecError as exc:
        raise SystemExit(f"error: {args.section}.spec: {exc}") from None

    table = read_table(Path(args.input))
    missing = [c for c in (params.passage_column, params.passage_id_column) if c not in table.columns]
    if missing:
        raise SystemExit(
            f"error: {args.section}: {args.input} has no column(s) {missing}; its columns: {table.columns}"
        )
    passages = table.unique(subset=[params.passage_id_column], keep="first", maintain_order=True).to_dicts()
    if not passages:
        raise SystemExit(
            f"error: {args.section}: {args.input} has no passages (an upstream stage kept none)."
        )
    planned = plan(spec, passages, params.conversations, params.seed)

    with TeacherEngine(max_attempts=params.max_attempts) as engine:
        with exit_on_teacher_error(args.section, "rerun to resume from the cache."):
            conversations, rejects, n_requests = synthesize(spec, planned, params, root, engine)
    if not conversations:
        reasons = Counter(r["reason"] for r in rejects).most_common(5)
        print(f"{args.section}: error: no conversation survived; reject reasons: {reasons}", file=sys.stderr)
        raise SystemExit(5)

    turn_type = pl.Struct(
        {
            "question": pl.String,
            "answer": pl.String,
            "evidence": pl.String,
            "turn_type": pl.String,
            "phenomena": pl.List(pl.String),
        }
    )
    schema = {
        "id": pl.String,
        "passage_id": pl.String,
        "context": pl.String,
        "path": pl.List(pl.String),
        "turn_types": pl.List(pl.String),
        "turns": pl.List(turn_type),
        "n_turns": pl.Int64,
        "stopped": pl.String,
    }
    frame = pl.DataFrame(conversations, schema=schema)
    split = [_split(p, params.seed, params.val_fraction) for p in frame["passage_id"].to_list()]
    frame_split = frame.with_columns(pl.Series("split", split))
    reject_schema = {"conversation": pl.Int64, "turn": pl.Int64, "reason": pl.String, "raw": pl.String}
    stats = {
        **engine.counters.as_dict(),
        "backend": engine.backend_kind,
        "n_requests": n_requests,
        "n_conversations": frame.height,
        "n_turns": int(frame["n_turns"].sum()),
        "n_rejects": len(rejects),
        "rejects_by_reason": dict(sorted(Counter(r["reason"].split(":", 1)[0] for r in rejects).items())),
        "stopped_early": dict(sorted(Counter(s for s in frame["stopped"].to_list() if s).items())),
    }
    with atomic_output_dir(args.out) as tmp:
        frame.write_parquet(tmp / "conversations.parquet")
        frame_split.filter(pl.col("split") == "train").drop("split").write_parquet(tmp / "train.parquet")
        frame_split.filter(pl.col("split") == "val").drop("split").write_parquet(tmp / "val.parquet")
        (tmp / "turns").mkdir()
        for split in ("train", "val"):  # one row per turn (the history in `context`), for evaluate's baseline
            part = frame_split.filter(pl.col("split") == split).to_dicts()
            turns = [
                {k: v for k, v in r.items() if not k.startswith("_")} for r in expand_conversations(part)
            ]
            turn_schema = {
                "context": pl.String,
                "question": pl.String,
                "answer": pl.String,
                "turn": pl.Int64,
                "turn_type": pl.String,
            }
            pl.DataFrame(turns, schema=turn_schema).write_parquet(tmp / "turns" / f"{split}.parquet")
        pl.DataFrame(rejects, schema=reject_schema).write_parquet(tmp / "rejects.parquet")
        write_json(tmp / "stats.json", data_facts(stats, args.out, "stats.json"))
    print(
        f"{args.section}: {frame.height} conversations, {stats['n_turns']} turns from {n_requests} requests, "
        f"{len(rejects)} rejects ({engine.counters.calls} teacher calls, "
        f"{engine.counters.cache_hits} cache hits)"
    )


if __name__ == "__main__":
    run_main(main)
