"""The teacher primitive: map a prompt over rows, get validated rows back, with every reject kept.

    requests = build_requests(prompt, rows, model=..., variables={"passage": "text"}, constants={"count": 8})
    result = map_prompt(engine, prompt, requests, carry={"passage_id": "passage_id"})

For each input row a request is rendered with the row's columns as prompt variables (`variables`: prompt
variable -> column) plus `constants`; the engine sends it (cache, retries, schema validation, counters).
Each accepted answer becomes rows: the items of its `output.explode` list, or the answer object itself,
each with the `carry` columns of its input row. Then the checks the prompt file declares run in order
(`span`, `unique`, `not_matching`, `min_words`, `max_words`; see teacher/prompts.py); a failing row becomes
a reject with its reason. Requests whose every sample was rejected by the engine are rejects too. Nothing
is dropped silently: `rows` + `rejects` account for every answer.

An outage (any request that could not reach the endpoint after its retries) raises
`TeacherUnreachableError`:
it is not a verdict on the data, and every answer already received is cached for the rerun.

Synthesis, judges, critics and reference answers all go through this module.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster_project.teacher.engine import (
    TeacherEngine,
    TeacherRequest,
    TeacherResult,
    TeacherUnreachableError,
)
from dagster_project.teacher.lenient_json import repairs_of
from dagster_project.teacher.prompts import Prompt

RAW_MAX_CHARS = 2000
ROW_KEY = "_row"  # meta key: the input row a request was rendered from
VARS_KEY = "_vars"  # meta key: the variables it was rendered with (span checks look values up here)


@dataclass
class MapResult:
    """What a map produced: accepted rows, rejects (with reasons), and the number of requests."""

    rows: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    n_requests: int
    reject_reasons: dict[str, int] = field(default_factory=dict)
    # accepted answers whose JSON needed a repair (teacher/lenient_json.py), by repair; answers_repaired: all
    json_repairs: dict[str, int] = field(default_factory=dict)


def build_requests(
    prompt: Prompt,
    rows: Iterable[Mapping[str, Any]],
    *,
    model: str,
    variables: Mapping[str, str] | None = None,
    constants: Mapping[str, Any] | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    samples: int = 1,
    sampling: Mapping[str, Any] | None = None,
    extra_variables: Callable[[int, int], Mapping[str, Any]] | None = None,
    seed_by: Sequence[str] = (),
) -> list[TeacherRequest]:
    """One request per row (and per sample: `samples` requests with seeds seed, seed+1000, ...).

    Identical requests get identical (cached) answers; `seed_by` columns make each request's seed its own
    (a hash of those values and the sample number: stable when other rows are added or removed), so two
    rows that render the same messages are still two independent samples.

    `variables` maps each prompt variable to the row column it takes; `constants` are fixed values;
    `extra_variables(i, sample)` adds values per row and sample (e.g. in-context examples drawn for
    each request). `sampling` overrides the prompt file's sampling (top_p, ...).
    """
    variables, constants = dict(variables or {}), dict(constants or {})
    requests = []
    for i, row in enumerate(rows):
        missing = sorted({c for c in [*variables.values(), *seed_by] if c not in row})
        if missing:
            raise KeyError(
                f"{prompt.path}: the input rows have no column(s) {missing} (variables {variables}); "
                f"columns: {sorted(row)}"
            )
        values = {**constants, **{var: row[col] for var, col in variables.items()}}
        key = "\x1f".join(str(row.get(c)) for c in seed_by)
        for sample in range(samples):
            request_values = {**values, **(extra_variables(i, sample) if extra_variables else {})}
            req = TeacherRequest.from_prompt(
                prompt,
                model=model,
                temperature=temperature,
                seed=_seed(seed, sample, key if seed_by else None),
                meta={ROW_KEY: dict(row), VARS_KEY: request_values},
                **request_values,
            )
            if sampling:
                req.extra.update(sampling)
            requests.append(req)
    return requests


def _seed(seed: int | None, sample: int, key: str | None) -> int | None:
    """The seed of one request: `seed + 1000 * sample`, or, with a row key, seed plus a hash of (key,
    sample) so no two rows or samples share one."""
    if seed is None:
        return None
    if key is None:
        return seed + 1000 * sample
    return seed + int(hashlib.sha256(f"{key}\x1f{sample}".encode()).hexdigest()[:12], 16) % 10**12


def _squash(text: str) -> str:
    return " ".join(str(text).split())


def is_verbatim_span(value: str, text: str) -> bool:
    """True when `value` occurs in `text` exactly, up to runs of whitespace."""
    value = _squash(value)
    return bool(value) and value in _squash(text)


def _failed_check(check: Mapping[str, Any], row: Mapping[str, Any], ctx: Mapping[str, Any]) -> str | None:
    """The reason `row` fails `check` (None if it passes); `ctx` holds the request's variables."""
    kind = check["check"]
    if kind == "span":
        source = ctx.get(check["of"], row.get(check["of"], ""))
        ok = is_verbatim_span(str(row.get(check["column"], "")), str(source))
        return None if ok else check.get("reason") or f"{check['column']}_not_in_{check['of']}"
    if kind == "not_matching":
        hit = re.search(check["pattern"], str(row.get(check["column"], "")))
        return (check.get("reason") or f"{check['column']}_matches_pattern") if hit else None
    if kind in ("min_words", "max_words"):
        n = len(str(row.get(check["column"], "")).split())
        bad = n < check["value"] if kind == "min_words" else n > check["value"]
        return (check.get("reason") or f"{check['column']}_{kind.split('_')[0]}_words") if bad else None
    return None  # `unique` is applied across rows in `collect`


def _reject(res: TeacherResult, carried: Mapping[str, Any], attempt: int, reason: str, raw: str) -> dict:
    return {
        **carried,
        "request_id": res.request_id,
        "attempt": attempt,
        "reason": reason,
        "raw": raw[:RAW_MAX_CHARS],
    }


def collect(
    prompt: Prompt, results: Sequence[TeacherResult], carry: Mapping[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turn engine results into (rows, rejects) by the prompt's `output` spec; see the module doc."""
    carry = dict(carry or {})
    spec = prompt.output
    uniques = [c for c in spec.checks if c["check"] == "unique"]
    seen: list[set[tuple]] = [set() for _ in uniques]
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for res in results:
        source_row = res.meta.get(ROW_KEY, {})
        ctx = res.meta.get(VARS_KEY, {})
        carried = {out: source_row.get(col) for out, col in carry.items()}
        for rej in res.rejects:
            rejects.append(_reject(res, carried, rej.attempt, rej.reason, rej.raw))
        if not res.ok:
            continue
        value = res.value if isinstance(res.value, dict) else {"value": res.value}
        items = value.get(spec.explode) if spec.explode else [value]
        if not isinstance(items, list) or not items:  # nothing to explode: a verdict, not a silent zero
            raw = json.dumps(res.value, ensure_ascii=False)
            rejects.append(_reject(res, carried, res.attempt, f"empty_{spec.explode}", raw))
            continue
        for item in items:
            fields = item if isinstance(item, dict) else {"value": item}
            # Carried input columns win over answer fields of the same name (a label stays the seed's).
            row = {**{k: v.strip() if isinstance(v, str) else v for k, v in fields.items()}, **carried}
            reason = next((r for c in spec.checks if (r := _failed_check(c, row, ctx))), None)
            if reason is None:
                for check, keys in zip(uniques, seen, strict=True):
                    key = tuple(str(row.get(c, "")) for c in check["columns"])
                    if key in keys:
                        reason = check.get("reason") or "duplicate_" + "_".join(check["columns"])
                        break
                    keys.add(key)
            if reason:
                rejects.append(
                    _reject(res, carried, res.attempt, reason, json.dumps(item, ensure_ascii=False))
                )
                continue
            row["request_id"] = res.request_id
            rows.append(row)
    return rows, rejects


def run_requests(engine: TeacherEngine, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
    """Run requests through the engine; raise TeacherUnreachableError when any could not reach it."""
    results = engine.run(requests)
    unreachable = [r for r in results if any(j.reason.startswith("unavailable:") for j in r.rejects)]
    if unreachable:
        raise TeacherUnreachableError(
            f"{len(unreachable)} of {len(requests)} requests could not reach the teacher "
            f"at {engine.base_url or engine.backend_kind}; last error: {unreachable[-1].rejects[-1].reason}"
        )
    return results


def map_prompt(
    engine: TeacherEngine,
    prompt: Prompt,
    requests: Sequence[TeacherRequest],
    carry: Mapping[str, str] | None = None,
) -> MapResult:
    """Send `requests` (from `build_requests`) and collect validated rows and rejects."""
    results = run_requests(engine, requests)
    rows, rejects = collect(prompt, results, carry)
    reasons: dict[str, int] = {}
    for rej in rejects:
        reasons[rej["reason"]] = reasons.get(rej["reason"], 0) + 1
    return MapResult(rows, rejects, len(requests), dict(sorted(reasons.items())), count_repairs(results))


def count_repairs(results: Sequence[TeacherResult]) -> dict[str, int]:
    """How many accepted answers needed a JSON repair, by repair, and `answers_repaired` in all."""
    counts: dict[str, int] = {}
    for res in results:
        found = repairs_of(res.raw) if res.ok else ()
        for repair in found:
            counts[repair] = counts.get(repair, 0) + 1
        counts["answers_repaired"] = counts.get("answers_repaired", 0) + bool(found)
    return dict(sorted(counts.items()))
