"""What every stage shares: reading its params section, atomic output folders, small writers.

A stage sees only the params section it declares in dvc.yaml (`load_stage_params`): it is validated
against the stage kind's `Params` model, and the stage receives the model (every default lives in the
model). Under DISTILL_PARAMS_ACCESS_LOG each stage records the section it read, so a test can check
that what a stage reads and what it declares agree.
"""

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster_project.params_schema import (
    ParamsError,
    StageParams,
    kind_params,
    read_params_file,
    validate_section,
)


class TrackedParams(Mapping[str, Any]):
    """A read-only view of one params section that records every key path read."""

    def __init__(self, data: Mapping[str, Any], prefix: str, accessed: set[str] | None = None):
        self._data = data
        self._prefix = prefix
        self.accessed: set[str] = accessed if accessed is not None else set()

    def __getitem__(self, key: str) -> Any:
        path = f"{self._prefix}.{key}"
        if key not in self._data:
            raise KeyError(f"param '{path}' is not in params.yaml")
        self.accessed.add(path)
        value = self._data[key]
        if isinstance(value, Mapping):
            return TrackedParams(value, path, self.accessed)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# Every TrackedParams handed out in this process, so tests can see what stages read.
LOADED: list[TrackedParams] = []
# When set, each stage appends the param keys it read to this file at exit (tests compare them
# with the params the stage declares in dvc.yaml).
PARAMS_ACCESS_LOG_ENV = "DISTILL_PARAMS_ACCESS_LOG"


def load_stage_params(params_path: str | Path, section: str, model: type[StageParams] | None = None) -> Any:
    """Validate `section` of the params file against `model` (fail before any work, exit 2 naming the key
    and the fix) and return the validated model.

    Without `model` (a stage not yet typed) the section is validated against the kind named `section`
    and returned as a read-tracking mapping of the raw values.
    """
    params_path = Path(params_path)
    try:
        raw = read_params_file(params_path)
        if section not in raw and model is None:
            raise ParamsError(f"{params_path.name}: {section}: required key is missing; add the section.")
        validated = validate_section(
            model or kind_params(section), raw.get(section), section, params_path.parent, params_path.name
        )
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log_path = os.environ.get(PARAMS_ACCESS_LOG_ENV)
    if model is None:
        tracked = TrackedParams(raw[section], section)
        LOADED.append(tracked)
        if log_path:
            atexit.register(_log_access, Path(log_path), section, tracked)
        return tracked
    if log_path:  # a typed stage reads its whole section: every key is validated and used through it
        whole = TrackedParams(raw.get(section) or {}, section)
        whole.accessed.update(f"{section}.{k}" for k in whole)
        atexit.register(_log_access, Path(log_path), section, whole)
    return validated


def _log_access(log_path: Path, section: str, tracked: TrackedParams) -> None:
    line = json.dumps({"argv": sys.argv, "section": section, "accessed": sorted(tracked.accessed)})
    with open(log_path, "a") as f:
        f.write(line + "\n")


@contextmanager
def atomic_output_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` in one rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), sorted keys, UTF-8."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


# Run facts: what describes one run rather than its result (timings, throughput, the teacher engine's
# calls, cache hits, retries, tokens and cost, which depend on what the cache held). They never go into a
# DVC-tracked output, so an unchanged rebuild writes the same bytes and downstream stays fresh: each
# stage writes them to `<out's folder>/.runs/<out's name>.json` (git-ignored, not a DVC output), keyed
# by the output file they were split from. See docs/recipes.md, "Deterministic outputs".
RUN_FACT_KEYS = frozenset(
    {
        # the teacher engine's counters
        "calls",
        "cache_hits",
        "retries",
        "retry_reasons",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "rate_limited",
        "paused_s",
        "throttle_cuts",
        "max_in_flight",
        "stopped_by_budget",
        "batched",
        "wall_s",
        "by_model",
        # timings and throughput
        "seconds",
        "train_seconds",
        "tokens_per_second",
        "steps_per_second",
    }
)
RUN_FACTS_DIR = ".runs"


def split_run_facts(obj: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`obj` without its run facts, the run facts) - keys of RUN_FACT_KEYS at any depth of nested dicts."""
    data: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    for key, value in obj.items():
        if key in RUN_FACT_KEYS:
            facts[key] = value
        elif isinstance(value, Mapping):
            data[key], inner = split_run_facts(value)
            if inner:
                facts[key] = inner
        else:
            data[key] = value
    return data, facts


def run_facts_path(out: str | Path) -> Path:
    """Where the run facts of the stage writing output folder `out` go: `<parent>/.runs/<name>.json`."""
    out = Path(out)
    return out.parent / RUN_FACTS_DIR / f"{out.name}.json"


def read_run_facts(out: str | Path) -> dict[str, Any]:
    """The run facts last recorded for output folder `out` ({output file: its facts}; {} if none)."""
    path = run_facts_path(out)
    return json.loads(path.read_text()) if path.exists() else {}


def data_facts(obj: Mapping[str, Any], out: str | Path | None, file: str) -> dict[str, Any]:
    """`obj` without its run facts, which are recorded for `out` (the stage's output folder) under
    `file` (the output file `obj` is written to); with `out` None they are dropped."""
    data, facts = split_run_facts(obj)
    if out is not None:
        recorded = read_run_facts(out)
        recorded[file] = facts
        path = run_facts_path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, recorded)
    return data


# Parquet bytes depend on the writer and its options: every stage writes through here, with the
# options pinned (polars' own writer, zstd level 3, statistics on, fixed row groups) and polars itself
# pinned in constraints-cpu.txt, so an unchanged rebuild writes the same bytes.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "statistics": True,
    "row_group_size": 65536,
    "use_pyarrow": False,
}


def write_parquet(df: Any, path: str | Path) -> None:
    """Write a polars DataFrame to `path` with the pinned PARQUET_OPTIONS (deterministic bytes)."""
    df.write_parquet(path, **PARQUET_OPTIONS)


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (temp file + rename), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def stage_parser(description: str, kind: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes: `--params` (the params file) and, for a
    typed kind, `--section` (the params section this stage reads; default: the kind's name)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="path to params.yaml")
    if kind is not None:
        parser.add_argument(
            "--section", default=kind, help=f"the params section this stage reads (default: {kind})"
        )
    return parser


# Errors whose message says what is wrong and how to fix it: printed as one `error:` line (no traceback)
# with this exit status. Matched by class name along the MRO, so this module imports none of them.
HANDLED_ERRORS = {
    "ParamsError": 2,
    "GoldError": 2,
    "PromptError": 2,
    "PromptFormatError": 2,
    "TeacherConfigError": 2,
    "CacheMissError": 2,
    "BudgetExceededError": 3,
    "TeacherUnreachableError": 4,
}
DEBUG_ENV = "DISTILL_DEBUG"


def handled_exit_code(exc: BaseException) -> int | None:
    """The exit status of a handled error (see HANDLED_ERRORS), None for any other exception."""
    for cls in type(exc).__mro__:
        if cls.__name__ in HANDLED_ERRORS:
            return HANDLED_ERRORS[cls.__name__]
    return None


def debugging() -> bool:
    """True under `--debug` or DISTILL_DEBUG=1: handled errors show their full traceback."""
    return "--debug" in sys.argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def prompt_constants(
    section: str, constants: Mapping[str, Any], files: Mapping[str, str | Path], root: Path
) -> dict[str, Any]:
    """A teacher prompt's fixed values: `constants`, and each of `files` (prompt variable -> a YAML/JSON
    file, relative to `root`) parsed. A file that is not valid YAML/JSON stops the stage with an error."""
    import yaml

    values = dict(constants)
    for var, path in files.items():
        try:
            values[var] = yaml.safe_load((root / path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SystemExit(f"error: {section}.files.{var}: {path} is not valid YAML/JSON: {exc}") from None
    return values


def print_dry_run(section: str, engine: Any, requests: list[Any]) -> None:
    """A teacher stage's `--dry-run`: the engine's estimate of `requests` as JSON on stdout and a one-line
    summary (requests, cache hits, calls, tokens, worst-case cost) on stderr; nothing is sent."""
    estimate = {"stage": section, "backend": engine.backend_kind, **engine.estimate(requests)}
    print(json.dumps(estimate, indent=2))
    cost = estimate["cost_usd_max"]
    print(
        f"{section} --dry-run: {estimate['requests']} requests, "
        f"{estimate['cache_hits']} cached, {estimate['calls']} calls, "
        f"~{estimate['tokens_in']} tokens in, <= "
        f"{estimate['tokens_out_max']} tokens out, <= "
        f"{'unknown (no price)' if cost is None else f'${cost:.4f}'}",
        file=sys.stderr,
    )


@contextmanager
def exit_on_teacher_error(section: str, resume_hint: str) -> Iterator[None]:
    """Turn the teacher's budget, config and reachability errors raised inside the block into one
    stderr line and an exit status: 3 (budget), 2 (config), 4 (unreachable; `resume_hint` tells how to
    resume). `--debug` or DISTILL_DEBUG=1 lets the error through with its traceback."""
    # The teacher stack is imported only by the stages that call the teacher.
    from dagster_project.teacher.engine import (
        BudgetExceededError,
        TeacherConfigError,
        TeacherUnreachableError,
    )

    try:
        yield
    except BudgetExceededError as exc:
        if debugging():
            raise
        print(f"{section}: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    except TeacherConfigError as exc:
        if debugging():
            raise
        print(f"{section}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except TeacherUnreachableError as exc:
        if debugging():
            raise
        print(f"{section}: error: {exc}. Nothing written; {resume_hint}", file=sys.stderr)
        raise SystemExit(4) from None


def run_main(main: Any) -> None:
    """Run a stage's `main()`: a handled error prints `error: <message>` (what is wrong and the fix) and
    exits with its status; `--debug` or DISTILL_DEBUG=1 shows the full traceback instead (a stage that
    handles an error itself checks `debugging()`)."""
    debug = debugging()
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"  # the stage's own handlers see it too
    try:
        main()
    except Exception as exc:
        code = handled_exit_code(exc)
        if code is None or debug:
            raise
        message = str(exc).strip() or type(exc).__name__
        print(f"error: {message}\n(full traceback: rerun with --debug or {DEBUG_ENV}=1)", file=sys.stderr)
        raise SystemExit(code) from None
