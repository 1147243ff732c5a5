"""Sharded synthesis through Dagster: throughput by shard count and executor, and what orchestration costs.

    python benchmarks/scale.py [--examples 100000] [--shards 1,4,8] [--executors multiprocess,celery]
                               [--latency-ms 200] [--in-flight 64] [--out benchmarks/results/scale.json]

For each executor and shard count, a fresh git+DVC repo holds one recipe: the real `synthesize` stage
kind (grounded QA, 8 pairs a passage) as a `foreach` of N shards in the pool `teacher`, over generated
passages (unique, so nothing is answered from a cache), against the project's OpenAI-compatible teacher
server (`python -m dagster_project.teacher.server`, every answer after `--latency-ms`) in its own process.
Each shard sends at most `--in-flight` requests at once (DISTILL_TEACHER_CONCURRENCY), the way one
worker is capped against a real endpoint, so N shards may send N times as many. The recipe's job is
materialized with Dagster (`execute_job`): `multiprocess` = the recipe job's default run config (its
shards side by side, the pool's concurrency = N); `celery` = the celery executor with a redis broker and
two workers started here (skipped, with the reason, where redis-server or dagster-celery is missing).

Printed JSON, per executor and shard count: wall seconds, examples, examples/s, the speed-up over one
shard of the same executor in this run (the in-flight cap is per shard, so the ideal is N times), and
the orchestration overhead: wall time outside every stage
command (each command is timed by a wrapper around it), as a fraction of wall time. On a 2-core
machine the teacher server and the shards share the cores, so throughput stops growing where the CPUs
do (the JSON records CPU count and load).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from celery_fixture import celery_workers, redis_server  # noqa: E402  (redis-server and workers, as the tests start them)
from helpers import commit_dvc_repo, free_port  # noqa: E402  (the fixture repos and ports of the tests)

PAIRS_PER_PASSAGE = 8  # asked of the teacher
PAIRS_WRITTEN = 5.1  # what the offline teacher writes a demo passage on average (measured): sizes the input

TIMED_PY = """
import json, os, pathlib, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
start = time.time()
code = subprocess.call(cmd)
folder = pathlib.Path(os.environ["SCALE_TIMING_DIR"]); folder.mkdir(parents=True, exist_ok=True)
(folder / f"{label}-{os.getpid()}.json").write_text(json.dumps([start, time.time()]))
sys.exit(code)
"""


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


def start_teacher(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "dagster_project.teacher.server", "--port", str(port)]
    cmd += ["--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, "the teacher server")
    return proc, f"http://127.0.0.1:{port}/v1"


def passages(count: int) -> list[dict]:
    """`count` unique passages: demo-world passages, each with a line naming its record number."""
    source = [json.loads(line) for line in (REPO / "data/demo_world/passages.jsonl").read_text().splitlines()]
    return [
        {"passage_id": f"p{i:06d}", "text": f"{source[i % len(source)]['text']} Record {i}."}
        for i in range(count)
    ]


def make_repo(root: Path, shards: int, rows: list[dict]) -> None:
    """A git+DVC repo with one recipe: `synthesize` as a foreach of `shards` shards in the pool teacher."""
    import polars as pl

    (root / "data").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(root / "data/passages.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = params["synthesize"]
    section["prompt"] = str(REPO / "prompts/grounded_qa.yaml")
    section["constants"] = {"count": PAIRS_PER_PASSAGE}
    (root / "params.yaml").write_text(yaml.safe_dump({"synthesize": section}))
    (root / "timed.py").write_text(TIMED_PY)
    cmd = (
        f"python timed.py shard_${{item}} python -m dagster_project.stages.synthesize --params params.yaml "
        f"--input data/passages.parquet --shard ${{item}}/{shards} --out assets/synthesized_${{item}}"
    )
    stage = {
        "cmd": cmd,
        "deps": ["data/passages.parquet"],
        "params": ["synthesize"],
        "outs": ["assets/synthesized_${item}"],
        "meta": {"dagster": {"pool": "teacher", "concurrency": shards}},
    }
    dvc_yaml = {"stages": {"synthesize": {"foreach": list(range(shards)), "do": stage}}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (root / ".gitignore").write_text("__pycache__/\n")
    commit_dvc_repo(root, "scale")


def union_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def count_examples(root: Path, shards: int) -> int:
    import polars as pl

    files = [root / f"assets/synthesized_{i}/examples.parquet" for i in range(shards)]
    return sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)


def run_once(executor: str, shards: int, rows: list[dict], url: str, in_flight: int, work: Path,
             broker: str | None) -> dict:  # fmt: skip
    """Materialize a fresh `shards`-shard recipe with `executor`, in a process of its own: the project's
    definitions module (`-m dagster_project.definitions` for DISTILL_PROJECT_DIR, as `dagster dev` and
    workers load it) is imported once per process."""
    root = work / f"{executor}_{shards}"
    make_repo(root, shards, rows)
    timing = work / f"timing_{executor}_{shards}"
    home = work / f"dagster_home_{executor}_{shards}"
    home.mkdir()
    env = {
        **os.environ,
        "DISTILL_PROJECT_DIR": str(root),
        "DAGSTER_HOME": str(home),
        "DISTILL_TEACHER_BASE_URL": url,
        "OPENAI_API_KEY": "not-needed",
        "DISTILL_TEACHER_CONCURRENCY": str(in_flight),
        "DISTILL_TEACHER_CACHE_DIR": str(work / f"cache_{executor}_{shards}"),
        "SCALE_TIMING_DIR": str(timing),
        "DISTILL_DVC_PULL": "0",
        "TQDM_DISABLE": "1",
    }
    with ExitStack() as stack:
        if broker is not None:  # two workers, enough pool processes between them for every shard at once
            env |= {"DISTILL_EXECUTOR": "celery", "DISTILL_CELERY_BROKER": broker}
            stack.enter_context(celery_workers(env, work / f"workers_{shards}", 2, max(1, -(-shards // 2))))
        proc = subprocess.run([sys.executable, __file__, "--one"], cwd=root, env=env, capture_output=True,
                              text=True)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"executor": executor, "shards": shards, "error": (proc.stderr or proc.stdout)[-2000:]}
    run = json.loads(lines[-1])
    if "error" in run:
        return {"executor": executor, "shards": shards, **run}
    wall = run["wall_s"]
    spans = [tuple(json.loads(f.read_text())) for f in timing.glob("*.json")]
    stage_union = union_seconds(spans)
    examples = count_examples(root, shards)
    return {
        "executor": executor,
        "shards": shards,
        "wall_s": round(wall, 2),
        "examples": examples,
        "examples_per_s": round(examples / wall, 1),
        "stage_commands_s": round(stage_union, 2),
        "orchestration_s": round(wall - stage_union, 2),
        "orchestration_fraction": round((wall - stage_union) / wall, 4),
    }


def materialize_here() -> None:
    """(The child of `run_once`.) Execute the recipe job of DISTILL_PROJECT_DIR; print its wall time."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module("dagster_project.definitions", "defs", os.getcwd())
    with dg.DagsterInstance.get() as instance:
        started = time.time()
        result = dg.execute_job(repo.get_reconstructable_job("recipe__default"), instance=instance,
                                raise_on_error=False)  # fmt: skip
        wall = time.time() - started
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        print(json.dumps({"error": failure.message if failure else "run failed"}))
    else:
        print(json.dumps({"wall_s": wall}))


def celery_unavailable() -> str | None:
    """Why the celery executor cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        return "dagster-celery is not installed (pip install -e '.[scale]')"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--shards", default="1,4,8")
    parser.add_argument("--executors", default="multiprocess,celery")
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--in-flight", type=int, default=64, help="requests at once per shard")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # run_once's child
    args = parser.parse_args()
    if args.one:
        materialize_here()
        return

    shard_counts = [int(s) for s in args.shards.split(",")]
    rows = passages(int(args.examples / PAIRS_WRITTEN) + 1)
    server, url = start_teacher(args.latency_ms)
    results: list[dict] = []
    skipped: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="distill-scale-") as tmp:
            for executor in args.executors.split(","):
                with ExitStack() as stack:
                    broker = None
                    if executor == "celery":
                        why = celery_unavailable()
                        if why:
                            skipped[executor] = why
                            continue
                        broker = stack.enter_context(redis_server(Path(tmp) / "redis"))
                    elif executor != "multiprocess":
                        raise SystemExit(f"--executors: unknown {executor!r} (multiprocess, celery)")
                    for shards in shard_counts:
                        results.append(
                            run_once(executor, shards, rows, url, args.in_flight, Path(tmp), broker)
                        )
                        print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        server.terminate()
        server.wait(10)
    for executor in {r["executor"] for r in results}:
        base = next(
            (r for r in results if r["executor"] == executor and r.get("shards") == 1 and "wall_s" in r), None
        )
        for r in results:
            if r["executor"] == executor and base and "wall_s" in r:
                r["speedup_vs_1_shard"] = round(r["examples_per_s"] / base["examples_per_s"], 2)
    report = {
        "benchmark": "scale",
        "passages": len(rows),
        "requested_examples": args.examples,
        "latency_ms": args.latency_ms,
        "in_flight_per_shard": args.in_flight,
        "cpus": os.cpu_count(),
        "load_avg_end": os.getloadavg(),
        "results": results,
        "skipped": skipped,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
