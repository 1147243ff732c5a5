"""The teacher engine: every teacher, judge and critic call goes through `TeacherEngine`.

For each request it tries up to ``max_attempts`` samples; each sample is looked up in the response cache,
else sent to the endpoint (bounded concurrency, retries with exponential backoff that honour
``Retry-After`` on 429, 5xx, timeouts and connection errors), stored in the cache, and validated against
the prompt's output schema. A request whose every sample is rejected comes back with its reasons; nothing
is dropped. Sample ``k`` sends ``seed + k`` and carries ``attempt: k`` in its cache key, so a retried
reject asks for a fresh answer and a rerun replays every sample from the cache in the same order.

Endpoint configuration comes from the environment only (never params, never stored):
``DISTILL_TEACHER_BASE_URL`` (or ``OPENAI_BASE_URL``) and ``OPENAI_API_KEY``. Several base URLs (commas
or whitespace between them: replicas of one model, e.g. a vLLM fleet) are balanced by `_BalancedBackend`:
fewest calls in flight first, an endpoint that stops answering skipped for a growing cooldown. With no
base URL the model ``offline-teacher`` runs in process (`OfflineTeacher`) through the same cache,
validation and counters.
Concurrency, RPM/TPM limits, timeout and the budget cap come from ``DISTILL_TEACHER_*`` variables too
(`limits.EngineLimits`). A 429 pauses every sender until its Retry-After (pause-all), so a burst of
senders does not turn one 429 into a storm. ``DISTILL_TEACHER_STRUCTURED_OUTPUT=1`` also sends the
prompt's schema as ``response_format`` (for endpoints that support json_schema); answers are validated
either way.

Transport (``DISTILL_TEACHER_TRANSPORT``): ``http`` (default) speaks the OpenAI chat-completions wire
protocol over `http1.Http1Client`, a lean HTTP/1.1 keep-alive client on asyncio protocols; ``aiohttp``
over one aiohttp session; ``openai-sdk`` through `openai.AsyncOpenAI` on the SDK's aiohttp client
(`openai.DefaultAioHttpClient`; the default httpx pool collapses above ~256 in flight). All map errors
the same way. CPU per request, engine included, measured on this machine: ~0.15-0.25 ms (http), ~0.5-0.9
ms (aiohttp), ~1.8 ms (openai-sdk, which builds typed params and request objects); at 1,024 requests in
flight with 500 ms latency only the first keeps the pipeline full on one core. `run` also uses uvloop
when installed. See ``benchmarks/teacher_throughput.py``.

Accounting: `Counters` holds calls, cache hits, retries, rejects, 429s, pause time, tokens and cost per
model (`prices.PriceTable`); a run whose spend plus what is in flight would pass the budget stops sending,
lets the calls in flight finish into the cache and raises `BudgetExceededError`: a rerun with a larger
budget resumes from the cache.
"""

import asyncio
import email.utils
import inspect
import json
import logging
import os
import random
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from tqdm.auto import tqdm

from dagster_project.teacher.cache import ResponseCache, canonical_json, key_of, request_key
from dagster_project.teacher.http1 import ConnectTimeout, FirstByteTimeout, Http1Client
from dagster_project.teacher.limits import (
    AdaptiveLimit,
    EngineLimits,
    PauseGate,
    RateBucket,
    estimate_prompt_tokens,
)
from dagster_project.teacher.offline import revision as offline_revision
from dagster_project.teacher.prices import PriceTable
from dagster_project.teacher.prompts import Prompt
from dagster_project.teacher.validate import validate_answer
from dagster_project.teacher.wire import parse_completion, request_body

if TYPE_CHECKING:  # the SDK is imported by its transport only: loading Dagster's definitions skips it
    import openai

OFFLINE_MODEL = "offline-teacher"
log = logging.getLogger(__name__)


class TeacherConfigError(RuntimeError):
    """The teacher endpoint is not configured, or it refuses our credentials or model."""


class BudgetExceededError(RuntimeError):
    """The run stopped at the budget cap; finished responses are in the cache, a rerun resumes."""

    def __init__(self, message: str, counters: "Counters"):
        super().__init__(message)
        self.counters = counters


class TeacherUnreachableError(RuntimeError):
    """The endpoint gave no answer of any kind (not even an error status) for too long: the run stops
    rather than spend every remaining request's retries on it. Finished responses are cached."""


class _BudgetStop(Exception):
    """Raised inside a request when the budget cap stops it before it is sent."""


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
    # Part of the cache key, never sent: the model's snapshot when its name does not pin one. The
    # offline teacher's defaults to the revision of the handler that answers the prompt, so editing its
    # rules invalidates its old answers (and only its).
    revision: str | None = None
    # The prompt file's `name`: the offline teacher answers with that prompt's handler. Part of the
    # offline teacher's cache key only (a real endpoint never sees it).
    prompt_name: str | None = None
    _first_key: str | None = field(default=None, init=False, repr=False, compare=False)  # request_id memo

    def __post_init__(self) -> None:
        if self.revision is None and self.model == OFFLINE_MODEL:
            self.revision = offline_revision(self.prompt_name)

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
            prompt_name=prompt.name,
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
            **({"revision": self.revision} if self.revision is not None else {}),
            **({"prompt": self.prompt_name} if self.model == OFFLINE_MODEL and self.prompt_name else {}),
        }

    @property
    def request_id(self) -> str:
        """A stable id: the cache key of the first sample, shortened."""
        if self._first_key is None:
            self._first_key = request_key(self.payload(0))
        return self._first_key[:16]


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
    retry_reasons: Counter = field(default_factory=Counter)  # "http 429", "timeout", ...
    rate_limited: int = 0  # 429 answers
    paused_s: float = 0.0  # time every sender was paused by a 429's Retry-After
    throttle_cuts: int = 0  # rate cuts of the adaptive 429 limiter
    max_in_flight: int = 0
    stopped_by_budget: bool = False
    batched: int = 0  # answers that came through the Batch API
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)  # calls, tokens, cost_usd

    @property
    def cost_usd(self) -> float | None:
        """Estimated cost of the calls made (None when a model has no price)."""
        costs = [m["cost_usd"] for m in self.by_model.values()]
        return None if any(c is None for c in costs) else round(sum(costs), 6)

    def add_usage(
        self, model: str, tokens_in: int, tokens_out: int, prices: PriceTable, batch: bool = False
    ) -> None:
        """Count one answered call's tokens and cost against `model` (a batch call at the batch price)."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        m = self.by_model.get(model)
        if m is None:
            m = self.by_model[model] = {"calls": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
        m["calls"] += 1
        m["tokens_in"] += tokens_in
        m["tokens_out"] += tokens_out
        price = prices.get(model)
        if price is None or m["cost_usd"] is None:
            m["cost_usd"] = None
        else:
            m["cost_usd"] += price.cost(tokens_in, tokens_out) * (prices.batch_discount if batch else 1.0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "requests": self.requests,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "retry_reasons": dict(sorted(self.retry_reasons.items())),
            "rejects": dict(sorted(self.rejects.items())),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "rate_limited": self.rate_limited,
            "paused_s": round(self.paused_s, 3),
            "throttle_cuts": self.throttle_cuts,
            "max_in_flight": self.max_in_flight,
            "stopped_by_budget": self.stopped_by_budget,
            "batched": self.batched,
            "wall_s": round(self.wall_s, 3),
            "by_model": {
                k: {**v, "cost_usd": None if v["cost_usd"] is None else round(v["cost_usd"], 6)}
                for k, v in sorted(self.by_model.items())
            },
        }


class _Backend(Protocol):
    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class _StatusReject(Exception):
    """A non-retryable HTTP error about this request only (e.g. 400): the sample becomes a reject."""


class _InProcessBackend:
    """The offline teacher (or any object with its `chat` method) called in this process."""

    def __init__(self, teacher: Any):
        self.teacher = teacher
        # Stand-ins written for tests may not take the prompt name; the offline teacher does.
        self.takes_prompt = "prompt" in inspect.signature(teacher.chat).parameters

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        return self.teacher.chat(
            payload["messages"],
            model=payload["model"],
            temperature=payload["temperature"],
            seed=payload["seed"],
            max_tokens=payload["max_tokens"],
            **({"prompt": payload["prompt"]} if payload.get("prompt") and self.takes_prompt else {}),
        )

    async def close(self) -> None:
        return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if any (`headers`: case-insensitive or
    lower-case names)."""
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

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        connect_timeout_s: float = 10.0,
        first_byte_timeout_s: float | None = None,
    ):
        import openai

        self.connect_timeout_s = connect_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        timeout = self._timeout(timeout_s)
        try:
            http_client = openai.DefaultAioHttpClient(timeout=timeout)
        except (AttributeError, RuntimeError):  # older SDK or no aiohttp extra: the default httpx pool
            http_client = None
        # The SDK's own retries are off: ours count them and honour Retry-After the same way for all.
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    def _timeout(self, timeout_s: float) -> "openai.Timeout":
        """The whole-request limit, with a new connection held to the (much shorter) connect limit and,
        when set, the wait for the response's head to the first-byte limit (the socket read timeout)."""
        import openai

        first_byte = self.first_byte_timeout_s
        return openai.Timeout(
            timeout_s,
            connect=min(self.connect_timeout_s, timeout_s),
            read=timeout_s if first_byte is None else min(first_byte, timeout_s),
        )

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        import openai

        kwargs = request_body(payload)
        try:
            # A plain POST through the SDK's client (auth, headers, error mapping, transport) with the raw
            # body back: the typed `chat.completions.create` spends most of a core per 1,000 req/s on
            # transforming params and building pydantic models; a non-JSON body (an HTML error page)
            # stays visible as such.
            body = await self.client.post(
                "/chat/completions", cast_to=bytes, body=kwargs, options={"timeout": self._timeout(timeout_s)}
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
            raise TeacherConfigError(
                f"teacher endpoint refused the request ({exc.status_code}): {exc.message}. "
                "Check OPENAI_API_KEY and the model name."
            ) from None
        except openai.APITimeoutError as exc:
            raise _RetryableError(_timeout_kind(exc, self.first_byte_timeout_s is not None)) from None
        except openai.APIConnectionError as exc:
            raise _RetryableError(f"connection error: {exc.message}") from None
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                retry_after = _retry_after(getattr(exc.response, "headers", None) or {})
                raise _RetryableError(f"http {exc.status_code}", retry_after, exc.status_code) from None
            raise _StatusReject(f"http_{exc.status_code}: {exc.message}"[:300]) from None
        return parse_completion(body)

    async def close(self) -> None:
        await self.client.close()


def _timeout_kind(exc: BaseException, first_byte: bool = False) -> str:
    """'connect timeout' when the SDK's timeout was raised while connecting; 'first-byte timeout' when
    it was its read timeout and that is the first-byte limit (`first_byte`); else 'timeout'."""
    cause: BaseException | None = exc
    while cause is not None:
        name = type(cause).__name__.lower()
        if "connect" in name:  # httpx ConnectTimeout, aiohttp ConnectionTimeoutError
            return "connect timeout"
        if first_byte and ("readtimeout" in name or "sockettimeout" in name):  # httpx, aiohttp
            return "first-byte timeout"
        cause = cause.__cause__ or cause.__context__
    return "timeout"


def _error_message(body: bytes) -> str:
    try:
        err = json.loads(body).get("error")
        return str(err.get("message") if isinstance(err, dict) else err)[:300]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _answer(status: int, headers: Mapping[str, str], data: bytes) -> dict[str, Any]:
    """The completion in an HTTP answer, or the error its status means (`headers`: lower-case names)."""
    if 300 <= status < 400:  # not followed: a POST must not silently change its URL (or drop its body)
        raise TeacherConfigError(
            f"teacher endpoint redirected the request ({status}) to {headers.get('location', '?')!r}: "
            "set DISTILL_TEACHER_BASE_URL to the final URL (e.g. https:// rather than http://)."
        )
    if status < 400:
        return parse_completion(data)
    message = _error_message(data)
    if status in (401, 403, 404):
        raise TeacherConfigError(
            f"teacher endpoint refused the request ({status}): {message}. "
            "Check OPENAI_API_KEY, DISTILL_TEACHER_BASE_URL and the model name."
        )
    if status == 429 or status >= 500:
        raise _RetryableError(f"http {status}", _retry_after(headers), status)
    raise _StatusReject(f"http_{status}: {message}"[:300])


def _auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    """Accept and the OpenAI auth headers from the environment (each transport sets the content type)."""
    headers = {"Accept": "application/json"}
    key = env.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    optional = (("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project"))
    for var, header in optional:
        if env.get(var):
            headers[header] = env[var]
    return headers


class _Http1Backend:
    """The chat-completions wire protocol over `http1.Http1Client` (the default transport): the same
    requests, auth and error mapping as `_HttpBackend`, at a fraction of aiohttp's CPU per request."""

    def __init__(
        self,
        base_url: str,
        env: Mapping[str, str],
        connect_timeout_s: float = 10.0,
        first_byte_timeout_s: float | None = None,
    ):
        self.client = Http1Client(base_url, _auth_headers(env), connect_timeout_s, first_byte_timeout_s)

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        body = json.dumps(request_body(payload)).encode()
        try:
            response = await self.client.post("/chat/completions", body, timeout_s)
        except ConnectTimeout:
            raise _RetryableError("connect timeout") from None
        except FirstByteTimeout:
            raise _RetryableError("first-byte timeout") from None
        except TimeoutError:
            raise _RetryableError("timeout") from None
        except (OSError, ssl.SSLError) as exc:  # ConnectionError and ProtocolError included
            raise _RetryableError(f"connection error: {type(exc).__name__}") from None
        return _answer(response.status, response.headers, response.body)

    async def close(self) -> None:
        await self.client.close()


class _HttpBackend:
    """The OpenAI chat-completions wire protocol straight over one aiohttp session (``aiohttp`` transport).

    Same endpoint, auth and error semantics as `_OpenAIBackend`, at a sixth of its CPU per request
    (measured: ~3,500 vs ~550 requests per CPU-second); `_Http1Backend` needs a fifth of this one's.
    """

    def __init__(
        self,
        base_url: str,
        env: Mapping[str, str],
        concurrency: int,
        connect_timeout_s: float = 10.0,
        first_byte_timeout_s: float | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.connect_timeout_s = connect_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s  # aiohttp's sock_read: see limits
        self.headers = {**_auth_headers(env), "Content-Type": "application/json"}
        self.concurrency = concurrency
        self.session: aiohttp.ClientSession | None = None

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300)
            self.session = aiohttp.ClientSession(connector=connector, headers=self.headers)
        body = request_body(payload)
        try:
            async with self.session.post(
                self.url,
                data=json.dumps(body).encode(),
                timeout=aiohttp.ClientTimeout(
                    total=timeout_s, sock_connect=self.connect_timeout_s, sock_read=self.first_byte_timeout_s
                ),
            ) as resp:
                data = await resp.read()
                status, headers = resp.status, resp.headers
        except aiohttp.ConnectionTimeoutError:
            raise _RetryableError("connect timeout") from None
        except aiohttp.SocketTimeoutError:  # only set as the first-byte limit
            raise _RetryableError("first-byte timeout") from None
        except TimeoutError:
            raise _RetryableError("timeout") from None
        except aiohttp.ClientError as exc:
            raise _RetryableError(f"connection error: {type(exc).__name__}") from None
        return _answer(status, {k.lower(): v for k, v in headers.items()}, data)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class _LazyBackend:
    """A backend made on its first call (so a run whose every answer is cached needs no endpoint)."""

    def __init__(self, make: Any):
        self._make, self._backend = make, None

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self._backend is None:
            self._backend = self._make()
        return await self._backend.chat(payload, timeout_s)

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.close()


class _BalancedBackend:
    """Several endpoints serving the same model (e.g. a vLLM fleet) behind one backend: each call goes to
    the endpoint with the fewest calls in flight (ties: round robin). An endpoint whose last call failed to
    connect (or timed out) is skipped for `cooldown_s` x its consecutive failures (at most 30 s) while
    another is up, so a dead server costs one failed call per cooldown, not one per request."""

    def __init__(self, backends: Sequence[_Backend], urls: Sequence[str], cooldown_s: float = 1.0):
        self.backends, self.urls = list(backends), list(urls)
        self.in_flight = [0] * len(self.backends)
        self.served = [0] * len(self.backends)  # answered calls per endpoint
        self.failures = [0] * len(self.backends)  # consecutive connection failures
        self.down_until = [0.0] * len(self.backends)
        self.cooldown_s = cooldown_s
        self._next = 0

    def _pick(self) -> int:
        now = time.monotonic()
        up = [i for i in range(len(self.backends)) if self.down_until[i] <= now]
        candidates = up or range(len(self.backends))
        n = len(self.backends)
        order = sorted(candidates, key=lambda i: (self.in_flight[i], (i - self._next) % n))
        self._next = (order[0] + 1) % n
        return order[0]

    async def chat(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        i = self._pick()
        self.in_flight[i] += 1
        try:
            response = await self.backends[i].chat(payload, timeout_s)
        except _RetryableError as exc:
            if exc.status is None:  # no answer at all: connection refused, reset, timeout
                self.failures[i] += 1
                self.down_until[i] = time.monotonic() + min(30.0, self.cooldown_s * self.failures[i])
            raise
        finally:
            self.in_flight[i] -= 1
        self.failures[i] = 0
        self.served[i] += 1
        return response

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()


def base_urls(base_url: str) -> list[str]:
    """The endpoints of a `DISTILL_TEACHER_BASE_URL` value: one URL, or several separated by commas or
    whitespace (requests are balanced across them)."""
    return [u for u in re.split(r"[\s,]+", base_url.strip()) if u]


def endpoint_from_env(env: Mapping[str, str]) -> str | None:
    """The configured base URL, or None for the offline teacher."""
    return env.get("DISTILL_TEACHER_BASE_URL") or env.get("OPENAI_BASE_URL") or None


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class TeacherEngine:
    """Runs teacher requests with caching, bounded concurrency, rate limits, retries and validation.

    Arguments left as None come from the environment (`EngineLimits.from_env`); see the module doc.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        concurrency: int | None = None,
        max_retries: int = 6,
        timeout_s: float | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        cache: ResponseCache | None = None,
        teacher: Any = None,
        env: Mapping[str, str] | None = None,
        progress: bool = True,
        limits: EngineLimits | None = None,
        prices: PriceTable | None = None,
        budget_usd: float | None = None,
        unreachable_after_s: float = 30.0,
    ):
        self._env = dict(os.environ if env is None else env)
        self.limits = limits if limits is not None else EngineLimits.from_env(self._env)
        self.max_attempts = max_attempts
        self.concurrency = concurrency or self.limits.concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s or self.limits.timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        # Circuit breaker: a request that used up its retries on connection errors or timeouts stops the
        # run when the endpoint has not answered anything (any HTTP status counts) for this long.
        self.unreachable_after_s = unreachable_after_s
        self._last_heard = time.monotonic()
        self.cache = cache if cache is not None else ResponseCache()
        self._teacher = teacher  # in-process stand-in for OfflineTeacher (tests)
        self.base_url = endpoint_from_env(self._env)
        self.structured = self._env.get("DISTILL_TEACHER_STRUCTURED_OUTPUT", "") in ("1", "true", "yes")
        self.progress = progress
        self.prices = prices if prices is not None else PriceTable.load(env=self._env)
        self.budget_usd = budget_usd if budget_usd is not None else self.limits.budget_usd
        self.counters = Counters()
        self.balanced: _BalancedBackend | None = None  # set when several base URLs are configured
        self.gate = PauseGate()
        lim = self.limits
        # No burst (pure pacing): a provider that counts over short windows never sees more than the rate.
        self._rpm = RateBucket(lim.rpm, burst_s=0) if lim.rpm else None
        self._tpm = RateBucket(lim.tpm, burst_s=0) if lim.tpm else None
        self._tpm_in = RateBucket(lim.tpm_in, burst_s=0) if lim.tpm_in else None
        self._tpm_out = RateBucket(lim.tpm_out, burst_s=0) if lim.tpm_out else None
        self.adaptive = AdaptiveLimit(enabled=lim.adaptive)
        self._latency_s: float | None = None  # moving average of answered calls' latency (backoff scale)
        self._in_flight = 0
        self._reserved_usd = 0.0  # worst-case cost of the calls in flight
        self._warned_no_retry_after = False

    def __enter__(self) -> "TeacherEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the response cache (what `with TeacherEngine() as engine:` does on exit)."""
        self.cache.close()

    @property
    def backend_kind(self) -> str:
        """'openai-compatible' when an endpoint is configured, else 'offline'."""
        return "openai-compatible" if self.base_url else "offline"

    def _backend(self, models: set[str]) -> _Backend:
        urls = base_urls(self.base_url) if self.base_url else []
        if len(urls) > 1:
            backends = [self._endpoint_backend(url) for url in urls]
            self.balanced = _BalancedBackend(backends, urls)
            return self.balanced
        return self._endpoint_backend(urls[0] if urls else None, models)

    def _endpoint_backend(self, base_url: str | None, models: set[str] | None = None) -> _Backend:
        if base_url:
            transport = self._env.get("DISTILL_TEACHER_TRANSPORT") or "http"
            if transport == "openai-sdk":
                return _OpenAIBackend(
                    base_url,
                    self._env.get("OPENAI_API_KEY"),
                    self.timeout_s,
                    self.limits.connect_timeout_s,
                    self.limits.first_byte_timeout_s,
                )
            if transport == "aiohttp":
                return _HttpBackend(
                    base_url,
                    self._env,
                    self.concurrency,
                    self.limits.connect_timeout_s,
                    self.limits.first_byte_timeout_s,
                )
            if transport != "http":
                raise TeacherConfigError(
                    f"DISTILL_TEACHER_TRANSPORT={transport!r}: allowed values are http, aiohttp, openai-sdk"
                )
            try:
                return _Http1Backend(
                    base_url, self._env, self.limits.connect_timeout_s, self.limits.first_byte_timeout_s
                )
            except ValueError as exc:
                raise TeacherConfigError(f"DISTILL_TEACHER_BASE_URL: {exc}") from None
        others = (models or set()) - {OFFLINE_MODEL}
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

    def _check_models_priced(self, models: set[str]) -> None:
        if self.budget_usd is None:
            return
        unpriced = sorted(m for m in models if self.prices.get(m) is None)
        if unpriced:
            raise TeacherConfigError(
                f"a budget cap is set (DISTILL_TEACHER_BUDGET_USD={self.budget_usd:g}) but model(s) "
                f"{unpriced} have no price in {self.prices.source}: add them, or unset the budget."
            )

    def run(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Run `requests` to completion (sync façade over `arun`); results are in input order.

        With ``DISTILL_TEACHER_BATCH=1`` the first samples that miss the cache go through the Batch API
        first (`batch.prefill_with_batch`, resumable across restarts), the rest as usual.
        """
        if self._env.get("DISTILL_TEACHER_BATCH", "") in ("1", "true", "yes") and self.base_url:
            if len(base_urls(self.base_url)) > 1:
                raise TeacherConfigError(
                    "DISTILL_TEACHER_BATCH=1 needs one endpoint, DISTILL_TEACHER_BASE_URL names several: "
                    "name one, or unset DISTILL_TEACHER_BATCH."
                )
            from dagster_project.teacher.batch import prefill_with_batch

            start = time.perf_counter()
            self._check_models_priced({r.model for r in requests})
            prefill_with_batch(self, requests, log=lambda msg: print(msg, file=sys.stderr))
            self.counters.wall_s += time.perf_counter() - start
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(self.arun(requests))

    def estimate(self, requests: Sequence[TeacherRequest]) -> dict[str, Any]:
        """A dry run: how many first samples miss the cache, their estimated tokens and cost. Sends nothing.

        Input tokens are estimated from characters (~4 a token), output tokens are the requests'
        ``max_tokens`` (an upper bound); retries and rejected samples come on top.
        """
        by_model: dict[str, dict[str, Any]] = {}
        for req in requests:
            payload = self._payload(req, 0)
            hit = self.cache.mode != "off" and request_key(payload) in self.cache
            m = by_model.setdefault(
                req.model, {"requests": 0, "cache_hits": 0, "calls": 0, "tokens_in": 0, "tokens_out_max": 0}
            )
            m["requests"] += 1
            if hit:
                m["cache_hits"] += 1
                continue
            m["calls"] += 1
            m["tokens_in"] += estimate_prompt_tokens(req.messages)
            m["tokens_out_max"] += req.max_tokens or 0
        total_cost: float | None = 0.0
        for model, m in by_model.items():
            price = self.prices.get(model)
            cost = None if price is None else price.cost(m["tokens_in"], m["tokens_out_max"])
            m["cost_usd_max"] = None if cost is None else round(cost, 6)
            if m["cost_usd_max"] is None:
                total_cost = None
            elif total_cost is not None:
                total_cost += m["cost_usd_max"]
        return {
            "requests": len(requests),
            "cache_hits": sum(m["cache_hits"] for m in by_model.values()),
            "calls": sum(m["calls"] for m in by_model.values()),
            "tokens_in": sum(m["tokens_in"] for m in by_model.values()),
            "tokens_out_max": sum(m["tokens_out_max"] for m in by_model.values()),
            "cost_usd_max": None if total_cost is None else round(total_cost, 6),
            "budget_usd": self.budget_usd,
            "by_model": by_model,
            "note": "calls = first samples not in the cache; retries and re-asked rejects come on top; "
            "tokens_in estimated at ~4 characters a token; output at max_tokens (an upper bound).",
        }

    def _payload(self, req: TeacherRequest, attempt: int) -> dict[str, Any]:
        payload = req.payload(attempt)
        if self.structured and req.schema is not None:
            # Only present when enabled, so turning it on does not change the keys of existing entries.
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": req.schema, "strict": False},
            }
        return payload

    async def arun(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Run `requests` concurrently; results are in input order; counters accumulate on `self.counters`."""
        start = time.perf_counter()
        self._last_heard = time.monotonic()
        models = {r.model for r in requests}
        # Made on the first cache miss: a run answered from the cache (replay) needs no endpoint.
        backend = _LazyBackend(lambda: self._backend(models)) if requests else None
        self._check_models_priced(models)
        bar = tqdm(
            total=len(requests), unit="req", desc="teacher", disable=not self.progress, mininterval=0.5
        )
        last_postfix = [0.0]

        def postfix(refresh: bool) -> None:
            c = self.counters
            cost = c.cost_usd
            bar.set_postfix(
                calls=c.calls,
                hits=c.cache_hits,
                retries=c.retries,
                rej=sum(c.rejects.values()),
                tok_in=c.tokens_in,
                tok_out=c.tokens_out,
                cost="?" if cost is None else f"${cost:.4f}",
                refresh=refresh,
            )

        async def one(req: TeacherRequest) -> TeacherResult | None:
            assert backend is not None
            try:
                result = await self._request(req, backend)
            except _BudgetStop:
                return None
            bar.update(1)  # tqdm itself shows the rate (req/s) and the ETA
            now = time.monotonic()
            if now - last_postfix[0] > 0.5:  # postfix formatting is not free at 1,000 req/s
                last_postfix[0] = now
                postfix(refresh=False)
            return result

        # A pool of `concurrency` workers, each taking the next request when it is done with one: a
        # request is hashed and looked up only when a worker is free to send it, and a million requests
        # never become a million tasks. (One task per request would hash and look up every request
        # before the first answer could be processed: ~0.8 s at 4,096 requests.)
        results: list[TeacherResult | None] = [None] * len(requests)
        todo = iter(range(len(requests)))

        async def worker() -> None:
            for i in todo:  # shared by the workers: each index is taken once
                results[i] = await one(requests[i])

        try:
            tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(requests)))]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            postfix(refresh=True)
            bar.close()
            if backend is not None:
                await backend.close()
            self.counters.paused_s = self.gate.paused_s
            self.counters.throttle_cuts = self.adaptive.cuts
            self.counters.wall_s += time.perf_counter() - start
        if any(r is None for r in results):
            c = self.counters
            done = sum(r is not None for r in results)
            raise BudgetExceededError(
                f"teacher budget cap reached: spent ${c.cost_usd or 0:.4f} of ${self.budget_usd:g} "
                f"(DISTILL_TEACHER_BUDGET_USD); {done} of {len(results)} requests finished and are cached, "
                f"{len(results) - done} not sent. Rerun with a larger budget to resume from the cache.",
                c,
            )
        return results  # type: ignore[return-value]

    async def _request(self, req: TeacherRequest, backend: _Backend) -> TeacherResult:
        self.counters.requests += 1
        rejects: list[Reject] = []
        raw = ""
        for attempt in range(self.max_attempts):
            payload = self._payload(req, attempt)
            canonical = canonical_json(payload)
            key = key_of(canonical)
            if attempt == 0 and "response_format" not in payload:
                req._first_key = key  # the request id, without hashing the request once more
            response = self.cache.get(key, payload)
            if response is not None:
                self.counters.cache_hits += 1
            else:
                try:
                    response = await self._call(backend, payload)
                except _StatusReject as exc:
                    response = {"content": "", "finish_reason": None, "usage": {}, "error": str(exc)}
                except _RetryableError as exc:
                    silent_s = time.monotonic() - self._last_heard
                    if exc.status is None and silent_s > self.unreachable_after_s:
                        raise TeacherUnreachableError(
                            f"the teacher endpoint {self.base_url} has not answered for "
                            f"{silent_s:.0f} s (last error: {exc}, after {self.max_retries} retries); "
                            "stopped instead of retrying every remaining request"
                        ) from None
                    # Not cached: the endpoint may recover by the next run.
                    reason = f"unavailable: {exc} after {self.max_retries} retries"
                    rejects.append(Reject(attempt, reason, ""))
                    self.counters.rejects["unavailable"] += 1
                    continue
                self.cache.put(key, payload, response, canonical)
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

    def _worst_cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.prices.get(model)
        return 0.0 if price is None else price.cost(tokens_in, tokens_out)

    async def _admit(self, payload: dict[str, Any], est_in: int, est_out: int) -> float:
        """Wait for the pause gate, the budget and the rate limits; returns the call's worst-case cost."""
        await self.gate.wait()
        worst = self._worst_cost(payload["model"], est_in, est_out)
        if self.budget_usd is not None:
            spent = self.counters.cost_usd or 0.0
            if self.counters.stopped_by_budget or spent + self._reserved_usd + worst > self.budget_usd:
                self.counters.stopped_by_budget = True
                raise _BudgetStop()
        waits = [self.adaptive.reserve()]
        if self._rpm:
            waits.append(self._rpm.reserve(1))
        if self._tpm:
            waits.append(self._tpm.reserve(est_in + est_out))
        if self._tpm_in:
            waits.append(self._tpm_in.reserve(est_in))
        if self._tpm_out:
            waits.append(self._tpm_out.reserve(est_out))
        if max(waits) > 0:
            await asyncio.sleep(max(waits))
            await self.gate.wait()  # a 429 may have paused everyone while this sender waited
        self._reserved_usd += worst
        return worst

    def _settle(self, est_in: int, est_out: int, used_in: int, used_out: int) -> None:
        """Give back to the token buckets what a call reserved but did not use."""
        if self._tpm:
            self._tpm.refund(est_in + est_out - used_in - used_out)
        if self._tpm_in:
            self._tpm_in.refund(est_in - used_in)
        if self._tpm_out:
            self._tpm_out.refund(est_out - used_out)

    def _on_retryable(self, exc: _RetryableError, failures: int, took_s: float = 0.0) -> float:
        """Count a transient failure; returns this sender's delay before its retry.

        `failures`: this sample's failures before this one that were not 429s; `took_s`: how long the
        failed call took. Backoff is full jitter
        over ``base x 2**failures`` (at most `backoff_max_s`), where the base is
        `backoff_base_s` or, when shorter, a quarter of the endpoint's own latency (a moving average of
        answered calls): a retry waits on the scale of what a call takes, so a job's tail is set by the
        endpoint, not by the backoff; repeated failures still double it. A server's Retry-After is a floor.
        429s do not count toward the doubling: each waits the Retry-After it came with, so a 500 after two
        429s backs off like a first 500 (counting them made it wait up to 8x the latency). The backoff
        spaces a sender's *attempts*: it runs from when the failed call was sent, so a failure that took
        a whole round trip (a 500 after the model ran, a timeout) has served it and is retried at once,
        while a fast failure (connection refused, an instant 503) waits it out; each sender has one call
        at a time, so this never sends faster than the backoff allows.
        The first 429 also pauses every sender for its Retry-After (a burst of senders hitting an
        unknown limit does not turn one 429 into hundreds) and engages the adaptive limiter, which paces
        senders from then on (`limits.AdaptiveLimit`); later 429s delay their own sender.
        """
        self.counters.retries += 1
        self.counters.retry_reasons[str(exc)] += 1
        base = self.backoff_base_s
        if self._latency_s is not None:
            base = min(base, self._latency_s / 4)
        backoff = min(self.backoff_max_s, base * 2**failures)
        jitter = random.uniform(0, backoff)
        delay = max(exc.retry_after or 0.0, jitter - took_s)
        if exc.status == 429:
            # The server said when: exactly then (a 429 is about the rate, not an error of this request).
            delay = exc.retry_after if exc.retry_after is not None else jitter
            self.counters.rate_limited += 1
            if exc.retry_after is None and not self._warned_no_retry_after:
                self._warned_no_retry_after = True
                log.warning(
                    "teacher endpoint answered 429 without Retry-After: retrying with exponential backoff; "
                    "set DISTILL_TEACHER_RPM / DISTILL_TEACHER_TPM to stay under its limit"
                )
            if self.adaptive.rate_limited():
                pause = (
                    exc.retry_after if exc.retry_after is not None else random.uniform(backoff / 2, backoff)
                )
                self.gate.pause(pause)
                return 0.0  # the gate holds this sender too
        return delay

    async def _call(self, backend: _Backend, payload: dict[str, Any]) -> dict[str, Any]:
        """One sample from the endpoint, retrying transient failures with backoff."""
        est_in = estimate_prompt_tokens(payload["messages"])
        est_out = int(payload["max_tokens"] or 256)
        failures = 0  # not 429s: the exponent of the backoff
        for retry in range(self.max_retries + 1):
            worst = await self._admit(payload, est_in, est_out)
            self.counters.calls += 1
            self.adaptive.sent()
            self._in_flight += 1
            self.counters.max_in_flight = max(self.counters.max_in_flight, self._in_flight)
            sent = time.monotonic()
            try:
                response = await backend.chat(payload, self.timeout_s)
            except _StatusReject:
                self._last_heard = time.monotonic()
                raise
            except _RetryableError as exc:
                if exc.status is not None:  # an error status is still an answer: the endpoint is up
                    self._last_heard = time.monotonic()
                self._settle(est_in, est_out, 0, 0)
                if retry == self.max_retries:
                    raise
                delay = self._on_retryable(exc, failures, time.monotonic() - sent)
                failures += exc.status != 429
                if delay:
                    await asyncio.sleep(delay)
                continue
            finally:
                self._in_flight -= 1
                self._reserved_usd -= worst
            self._last_heard = time.monotonic()
            took = self._last_heard - sent
            self._latency_s = took if self._latency_s is None else 0.9 * self._latency_s + 0.1 * took
            usage = response.get("usage") or {}
            used_in, used_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            self._settle(est_in, est_out, used_in, used_out)
            self.adaptive.success(took)
            self.counters.add_usage(payload["model"], used_in, used_out, self.prices)
            return {
                "content": response.get("content"),
                "finish_reason": response.get("finish_reason"),
                "usage": {"prompt_tokens": used_in, "completion_tokens": used_out},
            }
        raise AssertionError("unreachable")
