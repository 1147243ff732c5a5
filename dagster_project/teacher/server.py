"""The offline teacher as an OpenAI-compatible HTTP server, with fault injection for tests.

    python -m dagster_project.teacher.server --port 8765 [--rate-429 0.1 --rate-html 0.05 ...]

Serves ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /stats`` (requests served, faults
injected, requests in flight) on 127.0.0.1. Faults are drawn per request from one uniform number in
consecutive bands (429, 500, hang, html, malformed, truncate, refusal), seeded by ``seed``, the request
body and how often that same body was seen before. So the draw does not depend on arrival order under
concurrency, and a retry of the same body gets a fresh draw.

``rpm_limit`` makes it enforce a requests-per-minute limit like a provider does: a token bucket holding
``rpm_burst_s`` seconds of requests; a request over the limit gets 429 with the Retry-After that a
well-behaved client needs to wait. It also implements enough of the Batch API for tests: ``POST /v1/files``
(multipart, purpose ``batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches`` and
``GET /v1/batches/{id}``; a batch completes ``batch_delay_s`` after creation, each line answered like a
chat request (faults included). ``canned`` answers every request with one fixed JSON object without
running the teacher: the minimal handler the throughput benchmark uses, so the server is not what limits.
"""

import argparse
import asyncio
import hashlib
import inspect
import json
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

# aiohttp's default listen backlog (128) drops SYNs when a client opens hundreds of connections at once;
# each dropped SYN costs that connection a 1 s retransmit, which caps a 1,024-in-flight benchmark.
BACKLOG = 4096
_FAULTS = ("429", "500", "hang", "html", "malformed", "truncate", "refusal")
_REFUSAL = "I'm sorry, but I can't help with that request."
_CANNED_CONTENT = json.dumps({"pairs": [{"question": "What is it?", "answer": "it"}]})
_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>\n"
)


@dataclass
class Faults:
    """Fault rates (0..1, summing to at most 1) and their settings."""

    latency_ms: float = 0.0  # added to every request
    rate_429: float = 0.0
    retry_after_s: float = 0.05  # sent as Retry-After with each 429
    fast_429: bool = False  # answer an injected 429 before the latency (a gateway refusing at the door)
    rate_500: float = 0.0
    rate_hang: float = 0.0  # sleeps hang_s before answering: a client timeout
    hang_s: float = 5.0
    rate_html: float = 0.0  # 200 with an HTML error page as the body
    rate_malformed: float = 0.0  # 200 whose message content is broken JSON
    rate_truncate: float = 0.0  # content cut in half, finish_reason "length"
    rate_refusal: float = 0.0  # 200 whose content is a refusal, not JSON
    rpm_limit: float = 0.0  # > 0: enforce this many requests per minute (429 with Retry-After over it)
    rpm_burst_s: float = 1.0  # the bucket holds this many seconds' worth of requests
    canned: bool = False  # answer a fixed JSON object instead of running the teacher (benchmarks)
    batch_delay_s: float = 0.2  # a batch stays in_progress this long
    seed: int = 0

    def __post_init__(self) -> None:
        total = sum(getattr(self, f"rate_{f}") for f in _FAULTS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {total:.3f} > 1")


class OfflineTeacherServer:
    """An aiohttp app serving `teacher` (default: OfflineTeacher) with injected `faults`."""

    def __init__(self, teacher: Any = None, faults: Faults | None = None, **fault_kwargs: Any):
        if teacher is None:
            from dagster_project.teacher.offline import OfflineTeacher

            teacher = OfflineTeacher()
        # The offline teacher answers by prompt name (request metadata); test stand-ins may not take it.
        self._takes_prompt = "prompt" in inspect.signature(teacher.chat).parameters
        self.teacher = teacher
        self.faults = faults or Faults(**fault_kwargs)
        # "requests", "ok", "in_flight", "max_in_flight", "rpm_429" and one count per injected fault
        self.stats: Counter = Counter()
        # (monotonic arrival time, outcome) of recent requests: "ok", a fault name or "rpm_429"
        self.events: deque[tuple[float, str]] = deque(maxlen=100_000)
        self._seen: Counter = Counter()
        self._any_fault = any(getattr(self.faults, f"rate_{f}") for f in _FAULTS)
        self._bucket = float(max(1.0, self.faults.rpm_limit / 60 * self.faults.rpm_burst_s))
        self._bucket_t = time.monotonic()
        self._canned = _completion(_CANNED_CONTENT, "stop", 10, 10, "offline-teacher", 0)
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat_completions)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/stats", self.get_stats)
        self.app.router.add_post("/v1/files", self.upload_file)
        self.app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        self.app.router.add_post("/v1/batches", self.create_batch)
        self.app.router.add_get("/v1/batches/{batch_id}", self.get_batch)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    def _over_rpm(self) -> float | None:
        """None when a request may pass the RPM limit now (and take its token), else seconds to wait."""
        rate = self.faults.rpm_limit / 60
        capacity = max(1.0, rate * self.faults.rpm_burst_s)
        now = time.monotonic()
        self._bucket = min(capacity, self._bucket + (now - self._bucket_t) * rate)
        self._bucket_t = now
        if self._bucket >= 1.0:
            self._bucket -= 1.0
            return None
        return (1.0 - self._bucket) / rate

    def _draw(self, body: bytes) -> str | None:
        digest = hashlib.sha256(body).hexdigest()
        occurrence = self._seen[digest]
        self._seen[digest] += 1
        h = hashlib.sha256(f"{self.faults.seed}:{digest}:{occurrence}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        edge = 0.0
        for fault in _FAULTS:
            edge += getattr(self.faults, f"rate_{fault}")
            if u < edge:
                return fault
        return None

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models."""
        return web.json_response(
            {"object": "list", "data": [{"id": "offline-teacher", "object": "model", "owned_by": "distill"}]}
        )

    def _teach(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.faults.canned:
            return {"content": _CANNED_CONTENT, "finish_reason": "stop", "usage": {}}
        return self.teacher.chat(
            req["messages"],
            model=req.get("model", "offline-teacher"),
            temperature=req.get("temperature", 0.0),
            seed=req.get("seed"),
            max_tokens=req.get("max_tokens") or req.get("max_completion_tokens"),
            **(
                {"prompt": prompt}
                if (prompt := (req.get("metadata") or {}).get("prompt")) and self._takes_prompt
                else {}
            ),
        )

    async def upload_file(self, request: web.Request) -> web.Response:
        """POST /v1/files: store an uploaded (multipart) file."""
        form = await request.post()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "file"):
            return _error(400, "expected a multipart 'file' field")
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = upload.file.read()
        self.stats["files_uploaded"] += 1
        return web.json_response(
            _file_object(file_id, len(self.files[file_id]), str(form.get("purpose", "")))
        )

    async def file_content(self, request: web.Request) -> web.Response:
        """GET /v1/files/{id}/content."""
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return _error(404, "no such file")
        return web.Response(body=data, content_type="application/octet-stream")

    async def create_batch(self, request: web.Request) -> web.Response:
        """POST /v1/batches: answer every line of the input file in the background."""
        req = await request.json()
        if req.get("input_file_id") not in self.files:
            return _error(400, f"no such file: {req.get('input_file_id')}")
        batch_id = f"batch-{len(self.batches) + 1}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": req.get("endpoint", "/v1/chat/completions"),
            "input_file_id": req["input_file_id"],
            "completion_window": req.get("completion_window", "24h"),
            "status": "in_progress",
            "created_at": int(time.time()),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.get("metadata"),
        }
        self.batches[batch_id] = batch
        self.stats["batches_created"] += 1
        asyncio.get_running_loop().create_task(self._run_batch(batch))
        return web.json_response(batch)

    async def _run_batch(self, batch: dict[str, Any]) -> None:
        await asyncio.sleep(self.faults.batch_delay_s)
        out: list[str] = []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            self.stats["batch_requests"] += 1
            answer = self._teach(item["body"])
            usage = answer.get("usage") or {}
            p, c = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            body = _completion_dict(
                answer["content"], answer["finish_reason"], p, c, item["body"]["model"], 0
            )
            response = {"status_code": 200, "request_id": item["custom_id"], "body": body}
            out.append(
                json.dumps({"id": f"resp-{len(out)}", "custom_id": item["custom_id"], "response": response})
            )
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = ("\n".join(out) + "\n").encode()
        batch.update(
            status="completed",
            output_file_id=file_id,
            completed_at=int(time.time()),
            request_counts={"total": len(out), "completed": len(out), "failed": 0},
        )

    async def get_batch(self, request: web.Request) -> web.Response:
        """GET /v1/batches/{id}."""
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        return web.json_response(batch)

    async def get_stats(self, request: web.Request) -> web.Response:
        """GET /stats: the counters, for tests and benchmarks that run the server in another process."""
        return web.json_response(dict(self.stats))

    async def chat_completions(self, request: web.Request) -> web.Response:
        """POST /v1/chat/completions: the teacher's answer, or an injected fault."""
        stats = self.stats
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            return await self._answer(request)
        finally:
            stats["in_flight"] -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrival = time.monotonic()
        if self.faults.rpm_limit > 0:
            wait = self._over_rpm()
            if wait is not None:
                self.events.append((arrival, "rpm_429"))
                self.stats["rpm_429"] += 1
                headers = {"Retry-After": f"{wait:.3f}", "retry-after-ms": f"{wait * 1000:.0f}"}
                return _error(429, "rate limit exceeded (rpm)", headers=headers, kind="rate_limit_exceeded")
        fault = self._draw(body) if self._any_fault else None
        if self.faults.latency_ms and not (fault == "429" and self.faults.fast_429):
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if self.faults.canned and not self._any_fault:
            self.events.append((arrival, "ok"))
            self.stats["ok"] += 1
            return web.Response(body=self._canned, content_type="application/json")
        try:
            req = json.loads(body)
            req["messages"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "invalid request body: expected JSON with 'messages'")
        self.events.append((arrival, fault or "ok"))
        if fault:
            self.stats[fault] += 1
        if fault == "429":
            headers = {"Retry-After": f"{self.faults.retry_after_s:g}"}
            return _error(429, "rate limit exceeded (injected)", headers=headers, kind="rate_limit_exceeded")
        if fault == "500":
            return _error(500, "internal server error (injected)", kind="server_error")
        if fault == "html":
            return web.Response(status=200, text=_HTML_PAGE, content_type="text/html")
        if fault == "hang":
            await asyncio.sleep(self.faults.hang_s)
        if fault == "refusal":
            return web.json_response(_completion_dict(_REFUSAL, "stop", 10, 12, req.get("model", ""), 0))
        try:
            answer = self._teach(req)
        except ValueError as exc:
            return _error(400, str(exc))
        content, finish = answer["content"], answer["finish_reason"]
        if fault == "malformed":
            content = content.replace('"', "'", 2).rstrip("}") + ", ]"
        elif fault == "truncate":
            content, finish = content[: max(1, len(content) // 2)], "length"
        else:
            self.stats["ok"] += 1
        usage = answer.get("usage") or {}
        p, c = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        model = req.get("model", "offline-teacher")
        return web.json_response(_completion_dict(content, finish, p, c, model, self.stats["requests"]))


def _completion_dict(content: str, finish: str, p: int, c: int, model: str, n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def _file_object(file_id: str, size: int, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": f"{file_id}.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _completion(content: str, finish: str, p: int, c: int, model: str, n: int) -> bytes:
    return json.dumps(_completion_dict(content, finish, p, c, model, n)).encode()


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, kind: str = "invalid_request_error"
):
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


class BaseURL(str):
    """The server's base URL (``http://127.0.0.1:<port>/v1``), carrying the server for its `stats`."""

    server: OfflineTeacherServer

    @property
    def stats(self) -> Counter:
        """Requests served and faults injected so far."""
        return self.server.stats

    @property
    def events(self) -> list[tuple[float, str]]:
        """(monotonic arrival time, outcome) of each request so far."""
        return list(self.server.events)


@contextmanager
def serve_in_thread(port: int = 0, teacher: Any = None, **faults: Any) -> Iterator[BaseURL]:
    """Run the server in a background thread for the duration of the block; yields its base URL."""
    server = OfflineTeacherServer(teacher, **faults)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG)
        try:
            await site.start()
            state["port"] = runner.addresses[0][1]
        except BaseException as exc:
            state["error"] = exc
            raise
        finally:
            ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="offline-teacher-server", daemon=True)
    thread.start()
    ready.wait(10)
    if "port" not in state:
        raise RuntimeError(f"offline teacher server did not start: {state.get('error')!r}")
    url = BaseURL(f"http://127.0.0.1:{state['port']}/v1")
    url.server = server
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def main(argv: list[str] | None = None) -> None:
    """CLI: serve the offline teacher on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    for name, default in asdict(Faults()).items():
        if isinstance(default, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", action="store_true")
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT; benchmarks): each keeps its own stats and faults",
    )
    args = parser.parse_args(argv)
    faults = Faults(**{k: getattr(args, k) for k in asdict(Faults())})
    print(f"offline teacher at http://127.0.0.1:{args.port}/v1 (faults: {faults})", flush=True)
    children = []
    for _ in range(max(1, args.workers) - 1):
        pid = os.fork()
        if pid == 0:
            _serve(faults, args.port, reuse_port=True)
            os._exit(0)
        children.append(pid)
    try:
        _serve(faults, args.port, reuse_port=args.workers > 1)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)


def _serve(faults: Faults, port: int, reuse_port: bool) -> None:
    server = OfflineTeacherServer(faults=faults)
    try:  # uvloop when installed: the server should not be what limits a throughput benchmark
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(
        server.app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        loop=loop,
        backlog=BACKLOG,
        reuse_port=reuse_port or None,
    )


if __name__ == "__main__":
    main()
