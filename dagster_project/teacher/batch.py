"""The Batch API path (OpenAI ``/v1/files`` + ``/v1/batches``) for large offline jobs, resumable.

`prefill_with_batch` sends the first sample of every request that misses the response cache as one
batch job, waits for it, and writes every answer into the cache; the engine then runs as usual and
finds them there (a rejected answer's retries go through the normal path). The batch id is persisted
next to the cache (``<cache dir>/batches/<job key>.json``, the job key being the hash of the request
keys) as soon as the batch exists, so a process killed while waiting resumes polling the same batch on
restart instead of paying for a second one. Batch prices are the synchronous ones times the price
table's ``batch_discount``.

Enable it for the synthesize stage with ``DISTILL_TEACHER_BATCH=1``; ``DISTILL_TEACHER_BATCH_POLL_S``
sets the polling interval (default 30 s). Uses the `openai` SDK (a handful of calls per job).
"""

import hashlib
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import openai

from dagster_project.teacher.cache import request_key
from dagster_project.teacher.wire import parse_completion, request_body

DONE = {"completed", "failed", "expired", "cancelled"}


class BatchFailedError(RuntimeError):
    """The batch ended without an output file (failed, expired or cancelled)."""


def _state_path(cache_dir: Path, keys: Sequence[str]) -> Path:
    job = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return cache_dir / "batches" / f"{job}.json"


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)  # atomic: a kill leaves the old state or the new one


def prefill_with_batch(engine: Any, requests: Sequence[Any], log: Any = print) -> dict[str, int]:
    """Fill `engine.cache` with the first samples of `requests` through one batch job; returns counts."""
    cache = engine.cache
    if cache.mode != "read-write" or not engine.base_url:
        return {"batched": 0, "cached": 0, "failed": 0}
    todo: dict[str, dict[str, Any]] = {}
    for req in requests:
        payload = engine._payload(req, 0)
        key = request_key(payload)
        if key not in cache and key not in todo:
            todo[key] = payload
    if not todo:
        return {"batched": 0, "cached": 0, "failed": 0}
    env = engine._env
    client = openai.OpenAI(base_url=engine.base_url, api_key=env.get("OPENAI_API_KEY") or "not-needed")
    poll_s = float(env.get("DISTILL_TEACHER_BATCH_POLL_S") or 30)
    state_path = _state_path(Path(cache.directory), list(todo))
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    try:
        if not state.get("batch_id"):
            lines = [
                json.dumps(
                    {
                        "custom_id": k,
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": request_body(p),
                    }
                )
                for k, p in todo.items()
            ]
            upload = io.BytesIO(("\n".join(lines) + "\n").encode())
            file = client.files.create(file=("requests.jsonl", upload), purpose="batch")
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            state = {"batch_id": batch.id, "input_file_id": file.id, "requests": len(todo)}
            _write_state(state_path, state)
            log(f"teacher batch {batch.id}: {len(todo)} requests submitted (state in {state_path})")
        else:
            log(f"teacher batch {state['batch_id']}: resuming (state in {state_path})")
        while True:
            batch = client.batches.retrieve(state["batch_id"])
            if batch.status in DONE:
                break
            time.sleep(poll_s)
        if not batch.output_file_id:
            state_path.unlink(missing_ok=True)  # a new run submits a fresh batch
            raise BatchFailedError(f"teacher batch {batch.id} ended {batch.status} without output")
        body = client.files.content(batch.output_file_id).read()
    finally:
        client.close()
    cached = failed = 0
    for line in body.decode().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, response = item.get("custom_id"), item.get("response") or {}
        if key not in todo or response.get("status_code") != 200:
            failed += 1  # not cached: the engine's normal path asks again
            continue
        answer = parse_completion(json.dumps(response.get("body") or {}))
        usage = answer["usage"]
        engine.counters.add_usage(
            todo[key]["model"], usage["prompt_tokens"], usage["completion_tokens"], engine.prices, batch=True
        )
        engine.counters.batched += 1
        cache.put(key, todo[key], answer)
        cached += 1
    state_path.unlink(missing_ok=True)
    return {"batched": len(todo), "cached": cached, "failed": failed}
