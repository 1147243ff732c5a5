"""The teacher engine: every teacher, judge and critic call goes through `TeacherEngine`.

For each request it tries up to ``max_attempts`` samples; each sample is looked up in the response cache,
else sent to the endpoint (bounded concurrency, retries with exponential backoff that honour
``Retry-After`` on 429, 5xx, timeouts and connection errors), stored in the cache, and validated against
the prompt's output schema. A request whose every sample is rejected comes back with its reasons; nothing
is dropped. Sample ``k`` sends ``seed + k`` and carries ``attempt: k`` in its cache key, so a retried
reject asks for a fresh answer and a rerun replays every sample from the cache in the same order.

Endpoint configuration comes from the environment only (never params, never stored):
``DISTILL_TEACHER_BASE_URL`` (or ``OPENAI_BASE_URL``) and ``OPENAI_API_KEY``. With no base URL the model
``offline-teacher`` runs in process (`OfflineTeacher`) through the same cache, validation and counters.
"""

import asyncio
import email.utils
import os
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from tqdm.auto import tqdm

from dagster_project.teacher.cache import ResponseCache, request_key
from dagster_project.teacher.prompts import Prompt
from dagster_project.teacher.validate import validate_answer

OFFLINE_MODEL = "offline-teacher"


class TeacherConfigError(RuntimeError):
    """The teacher endpoint is not configured, or it refuses our credentials or model."""


@dataclass
class TeacherRequest:
    """One chat request: messages plus sampling, the schema its answer must match, and caller metadata."""

    messages: list[dict[str, str]]
    model: str
    schema: dict[str, Any] | None = None
    temperature: float = 0.0
    seed: int | None = None
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other sampling params: top_p, stop, ...
    meta: dict[str, Any] = field(default_factory=dict)  # passed through to the result, not sent

    @classmethod
    def from_prompt(
        cls,
        prompt: Prompt,
        *,
        model: str,
        temperature: float = 0.0,
        seed: int | None = None,
        meta: dict[str, Any] | None = None,
        **variables: Any,
    ) -> "TeacherRequest":
        """Render `prompt` with `variables`; sampling defaults (max_tokens, ...) come from the prompt file."""
        sampling = dict(prompt.sampling)
        max_tokens = sampling.pop("max_tokens", None)
        sampling.pop("temperature", None)  # the caller's temperature (a param) wins
        return cls(
            messages=prompt.render(**variables),
            model=model,
            schema=prompt.output_schema,
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            extra=sampling,
            meta=dict(meta or {}),
        )

    def payload(self, attempt: int) -> dict[str, Any]:
        """The full request of sample `attempt`: what is sent, plus schema and attempt, i.e. the cache key."""
        return {
            "model": self.model,
            "messages": self.messages,
            "temperature": self.temperature,
            "seed": None if self.seed is None else self.seed + attempt,
            "max_tokens": self.max_tokens,
            "extra": self.extra,
            "schema": self.schema,
            "attempt": attempt,
        }

    @property
    def request_id(self) -> str:
        """A stable id: the cache key of the first sample, shortened."""
        return request_key(self.payload(0))[:16]


@dataclass
class Reject:
    """One rejected sample: which attempt, why, and the raw answer."""

    attempt: int
    reason: str
    raw: str


@dataclass
class TeacherResult:
    """The outcome of one request: `value` of the accepted sample, or `reason` of the last reject."""

    request_id: str
    ok: bool
    value: Any
    reason: str | None
    raw: str
    attempt: int  # index of the accepted (or last) sample
    rejects: list[Reject]
    meta: dict[str, Any]


@dataclass
class Counters:
    """What a run cost and what went wrong."""

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    rejects: Counter = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "requests": self.requests,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "rejects": dict(sorted(self.rejects.items())),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "wall_s": round(self.wall_s, 3),
        }


class _Backend(Protocol):
    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _StatusReject(Exception):
    """A non-retryable HTTP error about this request only (e.g. 400): the sample becomes a reject."""


class _InProcessBackend:
    """The offline teacher (or any object with its `chat` method) called in this process."""

    def __init__(self, teacher: Any):
        self.teacher = teacher

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        return self.teacher.chat(
            payload["messages"],
            model=payload["model"],
            temperature=payload["temperature"],
            seed=payload["seed"],
            max_tokens=payload["max_tokens"],
        )

    async def close(self) -> None:
        return None


def _retry_after(response: Any) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if any."""
    headers = getattr(response, "headers", None) or {}
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _OpenAIBackend:
    """Any OpenAI-compatible endpoint through `openai.AsyncOpenAI` (aiohttp transport when available)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        try:
            http_client = openai.DefaultAioHttpClient(timeout=timeout_s)
        except (AttributeError, RuntimeError):  # older SDK or no aiohttp extra: the default httpx pool
            http_client = None
        # The SDK's own retries are off: ours count them and honour Retry-After the same way for all.
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=0,
            http_client=http_client,
        )

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": payload["model"], "messages": payload["messages"]}
        kwargs["temperature"] = payload["temperature"]
        if payload["seed"] is not None:
            kwargs["seed"] = payload["seed"]
        if payload["max_tokens"] is not None:
            kwargs["max_tokens"] = payload["max_tokens"]
        kwargs.update(payload["extra"])
        try:
            resp = await self.client.chat.completions.create(**kwargs, timeout=timeout_s)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
            raise TeacherConfigError(
                f"teacher endpoint refused the request ({exc.status_code}): {exc.message}. "
                "Check OPENAI_API_KEY and the model name."
            ) from None
        except openai.APITimeoutError:
            raise _RetryableError("timeout") from None
        except openai.APIConnectionError as exc:
            raise _RetryableError(f"connection error: {exc.message}") from None
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise _RetryableError(f"http {exc.status_code}", _retry_after(exc.response)) from None
            raise _StatusReject(f"http_{exc.status_code}: {exc.message}"[:300]) from None
        if isinstance(resp, str):  # a non-JSON body (e.g. an HTML error page) comes back as text
            return {"content": resp, "finish_reason": None, "usage": {}}
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        return {
            "content": choice.message.content if choice else None,
            "finish_reason": choice.finish_reason if choice else None,
            "usage": {
                "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
            },
        }

    async def close(self) -> None:
        await self.client.close()


def endpoint_from_env(env: Mapping[str, str]) -> str | None:
    """The configured base URL, or None for the offline teacher."""
    return env.get("DISTILL_TEACHER_BASE_URL") or env.get("OPENAI_BASE_URL") or None


class TeacherEngine:
    """Runs teacher requests with caching, bounded concurrency, retries and validation; see the module doc."""

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        concurrency: int = 64,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        cache: ResponseCache | None = None,
        teacher: Any = None,
        env: Mapping[str, str] | None = None,
        progress: bool = True,
    ):
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.cache = cache if cache is not None else ResponseCache()
        self._teacher = teacher  # in-process stand-in for OfflineTeacher (tests)
        self._env = dict(os.environ if env is None else env)
        self.base_url = endpoint_from_env(self._env)
        self.progress = progress
        self.counters = Counters()

    @property
    def backend_kind(self) -> str:
        """'openai-compatible' when an endpoint is configured, else 'offline'."""
        return "openai-compatible" if self.base_url else "offline"

    def _backend(self, models: set[str]) -> _Backend:
        if self.base_url:
            return _OpenAIBackend(self.base_url, self._env.get("OPENAI_API_KEY"), self.timeout_s)
        others = models - {OFFLINE_MODEL}
        if others:
            raise TeacherConfigError(
                f"no teacher endpoint configured for model(s) {sorted(others)}: set DISTILL_TEACHER_BASE_URL "
                f"(and OPENAI_API_KEY if it needs one), or use model '{OFFLINE_MODEL}' "
                "for the offline teacher."
            )
        teacher = self._teacher
        if teacher is None:
            from dagster_project.teacher.offline import OfflineTeacher

            teacher = OfflineTeacher()
        return _InProcessBackend(teacher)

    def run(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Run `requests` to completion (sync façade over `arun`); results are in input order."""
        return asyncio.run(self.arun(requests))

    async def arun(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Run `requests` concurrently; results are in input order; counters accumulate on `self.counters`."""
        start = time.perf_counter()
        backend = self._backend({r.model for r in requests}) if requests else None
        sem = asyncio.Semaphore(self.concurrency)
        bar = tqdm(
            total=len(requests), unit="req", desc="teacher", disable=not self.progress, mininterval=0.5
        )
        try:

            async def one(req: TeacherRequest) -> TeacherResult:
                assert backend is not None
                result = await self._request(req, backend, sem)
                bar.update(1)
                c = self.counters
                bar.set_postfix(
                    calls=c.calls, hits=c.cache_hits, tok_in=c.tokens_in, tok_out=c.tokens_out, refresh=False
                )
                return result

            tasks = [asyncio.ensure_future(one(r)) for r in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            bar.close()
            if backend is not None:
                await backend.close()
            self.counters.wall_s += time.perf_counter() - start

    async def _request(self, req: TeacherRequest, backend: _Backend, sem: asyncio.Semaphore) -> TeacherResult:
        self.counters.requests += 1
        rejects: list[Reject] = []
        raw = ""
        for attempt in range(self.max_attempts):
            payload = req.payload(attempt)
            key = request_key(payload)
            response = self.cache.get(key, payload)
            if response is not None:
                self.counters.cache_hits += 1
            else:
                try:
                    async with sem:
                        response = await self._call(backend, payload)
                except _StatusReject as exc:
                    response = {"content": "", "finish_reason": None, "usage": {}, "error": str(exc)}
                except _RetryableError as exc:
                    # Not cached: the endpoint may recover by the next run.
                    reason = f"unavailable: {exc} after {self.max_retries} retries"
                    rejects.append(Reject(attempt, reason, ""))
                    self.counters.rejects["unavailable"] += 1
                    continue
                self.cache.put(key, payload, response)
            raw = response.get("content") or ""
            if response.get("error"):
                reason = response["error"]
                kind = reason.split(":", 1)[0]
                rejects.append(Reject(attempt, reason, raw))
                self.counters.rejects[kind] += 1
                continue
            verdict = validate_answer(raw, req.schema, response.get("finish_reason"))
            if verdict.ok:
                return TeacherResult(
                    req.request_id, True, verdict.value, None, raw, attempt, rejects, req.meta
                )
            assert verdict.reason is not None and verdict.kind is not None
            rejects.append(Reject(attempt, verdict.reason, raw))
            self.counters.rejects[verdict.kind] += 1
        last = rejects[-1]
        return TeacherResult(
            req.request_id, False, None, last.reason, last.raw, last.attempt, rejects, req.meta
        )

    async def _call(self, backend: _Backend, payload: dict[str, Any]) -> dict[str, Any]:
        """One sample from the endpoint, retrying transient failures with backoff."""
        for retry in range(self.max_retries + 1):
            self.counters.calls += 1
            try:
                response = await backend.chat(payload, self.timeout_s)
            except _RetryableError as exc:
                if retry == self.max_retries:
                    raise
                self.counters.retries += 1
                backoff = min(self.backoff_max_s, self.backoff_base_s * 2**retry)
                # Full jitter spreads a burst of 429s; a server's Retry-After is a floor.
                delay = max(exc.retry_after or 0.0, random.uniform(0, backoff))
                await asyncio.sleep(delay)
                continue
            usage = response.get("usage") or {}
            self.counters.tokens_in += int(usage.get("prompt_tokens") or 0)
            self.counters.tokens_out += int(usage.get("completion_tokens") or 0)
            return {
                "content": response.get("content"),
                "finish_reason": response.get("finish_reason"),
                "usage": {
                    "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                    "completion_tokens": int(usage.get("completion_tokens") or 0),
                },
            }
        raise AssertionError("unreachable")
