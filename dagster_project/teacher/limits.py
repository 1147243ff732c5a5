"""Client-side rate limits for the teacher engine: requests and tokens per minute, and a pause-all on 429.

Each limit is a bucket (`RateBucket`) that refills at ``per_minute / 60`` per second and holds at most
``burst_s`` seconds' worth; a sender *reserves* its amount at once (the level may go negative) and
sleeps until the bucket would have covered it. Reservations are taken in arrival order, so waiting
senders are served first come first served, and an over-estimate is given back with `refund` once the
real usage is known (output tokens: ``max_tokens`` is reserved, as providers count it, then refunded).

`PauseGate` is the pause-all: one 429 sets a time before which no sender starts a request, so a burst of
hundreds of senders does not turn one 429 into hundreds.

Limits are operational settings of one endpoint, read from the environment (`EngineLimits.from_env`),
never params: moving to another provider must not invalidate any asset.

======================================  =============================================================
``DISTILL_TEACHER_CONCURRENCY``         requests in flight at most (default 256)
``DISTILL_TEACHER_RPM``                 requests per minute (default: no limit)
``DISTILL_TEACHER_TPM``                 input + output tokens per minute (default: no limit)
``DISTILL_TEACHER_TPM_IN``              input (prompt) tokens per minute (default: no limit)
``DISTILL_TEACHER_TPM_OUT``             output (completion) tokens per minute (default: no limit)
``DISTILL_TEACHER_TIMEOUT_S``           per-request timeout in seconds (default 120)
``DISTILL_TEACHER_CONNECT_TIMEOUT_S``   opening a new connection, in seconds (default 10)
``DISTILL_TEACHER_FIRST_BYTE_TIMEOUT_S``  the response's head after the request is sent, in seconds
                                        (default: off; see below)
``DISTILL_TEACHER_ADAPTIVE``            ``0`` turns the adaptive 429 limiter off (default on)
``DISTILL_TEACHER_BUDGET_USD``          hard budget cap for one run (default: none)
======================================  =============================================================

The first-byte timeout is the longest the engine waits for a response to start (status line and headers)
once the request is sent; a call over it is aborted, counted under the retry reason ``first-byte
timeout`` and retried like a 5xx. Its trade-off: a non-streamed completion (what the engine asks for)
sends its headers only when the whole answer is generated, so this limit also caps generation time, and
a limit under a long answer's generation time fails that request on every retry. It is therefore off by
default (the request timeout alone bounds a call); set it, well above the slowest expected generation,
for an endpoint known to hang before answering (a gateway that accepts and then stalls, an overloaded
replica that queues), so a stuck call is retried after seconds rather than after the request timeout.
Every transport supports it: ``http`` times the head itself; ``aiohttp`` and ``openai-sdk`` use their
socket read timeout, which also bounds a pause between two reads of the body (a non-streamed body follows
its head at once).
"""

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass


class RateBucket:
    """A token bucket with reservations; see the module docstring."""

    def __init__(self, per_minute: float, burst_s: float = 1.0):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be > 0 per minute, got {per_minute}")
        self.rate = per_minute / 60.0
        self.burst_s = burst_s
        # At least one request's worth, so evenly spaced senders are never refused by the bucket itself.
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def set_rate(self, per_second: float) -> None:
        """Change the refill rate (the adaptive limiter's multiplicative decrease / increase)."""
        self._refill()
        self.rate = max(per_second, 1e-3)
        self.capacity = max(1.0, self.rate * self.burst_s)
        self.level = min(self.level, self.capacity)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, amount: float) -> float:
        """Take `amount` now; returns the seconds the caller must wait before using it."""
        self._refill()
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    async def acquire(self, amount: float) -> None:
        """Reserve `amount` and sleep until it is covered."""
        wait = self.reserve(amount)
        if wait > 0:
            await asyncio.sleep(wait)

    def refund(self, amount: float) -> None:
        """Give back an over-reservation (or take more, with a negative `amount`)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class PauseGate:
    """Pause-all: `pause(s)` stops every sender from starting a request for `s` seconds."""

    def __init__(self) -> None:
        self.until = 0.0
        self.paused_s = 0.0  # total time the gate was closed
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """Close the gate for `seconds` from now (a later end wins over an earlier one)."""
        now = time.monotonic()
        end = now + max(0.0, seconds)
        if end > self.until:
            self.paused_s += end - max(now, self.until)
            self.until = end
            self.pauses += 1

    async def wait(self) -> None:
        """Return when the gate is open."""
        while True:
            left = self.until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)


class AdaptiveLimit:
    """Learns an endpoint's request rate from its 429s when no (or too high an) RPM is configured (AIMD).

    Off until the first 429. On a 429 the rate (at first: the rate requests were being sent at) is cut
    by the share of 429s among the answers of the last `window_s` (by at most ``decrease``), and never
    below the *floor*: the success rate observed over that window (what the endpoint just served cannot
    be what it asks to slow down from). At most one cut per cooldown: the endpoint's latency (as TCP
    cuts once per round trip), between `min_cooldown_s` and `max_cooldown_s`; before the first success
    (no round trip completed yet) only the first 429 cuts.

    Against a real limit L the 429 share is the excess over L, so a cut lands near L and the floor holds
    it there. Against a steady share of 429s that do not depend on the rate, a cut costs that share and
    the floor keeps the rate where the answers come, instead of cutting it toward zero (a fixed 30% per
    429 and 1% back per success did: 20 -> 0.5 req/s under 10% 429s). Between cuts the rate is

    - raised by ``increase`` x itself per success, to at most `probe` x the floor (probing for more);
    - never below the floor when a sender reserves (a floor that rose lifts the pace at once).

    Pacing is a token bucket holding `burst_s` seconds of requests, so the bursts of a closed loop of
    senders (all answered at once, all sending again) pass while the average stays at `rate`.

    ``DISTILL_TEACHER_ADAPTIVE=0`` turns it off (`enabled=False`): 429s are then only retried, each
    after its Retry-After, and nothing else is paced or paused.
    """

    def __init__(
        self,
        decrease: float = 0.5,
        increase: float = 0.03,
        window_s: float = 1.0,
        burst_s: float = 0.25,
        probe: float = 2.0,
        min_cooldown_s: float = 0.05,
        max_cooldown_s: float = 0.5,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.decrease, self.increase, self.probe = decrease, increase, probe
        self.window_s, self.burst_s = window_s, burst_s
        self.min_cooldown_s, self.max_cooldown_s = min_cooldown_s, max_cooldown_s
        self.min_span_s = 0.25  # a rate is never measured over less (a few answers in an instant are none)
        self.rate: float | None = None  # requests per second; None until the first 429
        self.cuts = 0  # rate cuts made (stats.json: throttle_cuts)
        self.latency_s: float | None = None  # moving average of answered calls
        self._last_cut = float("-inf")
        self._bucket: RateBucket | None = None
        self._first_send: float | None = None
        self._first_success: float | None = None
        self._successes: deque[float] = deque()
        self._limited: deque[float] = deque()
        self._sends: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for times in (self._successes, self._limited, self._sends):
            while times and now - times[0] > self.window_s:
                times.popleft()

    def _span(self, now: float, since: float | None = None) -> float:
        since = self._first_send if since is None else since
        elapsed = now - since if since is not None else 0.0
        return min(self.window_s, max(elapsed, self.min_span_s))

    def floor(self, now: float | None = None) -> float:
        """Successes per second over the last `window_s`: the rate the endpoint is demonstrably serving
        (over the whole window, also in the first second: it may understate then, never overstate)."""
        self._trim(time.monotonic() if now is None else now)
        return len(self._successes) / self.window_s

    def sent(self) -> None:
        """Record a request sent (the first cut starts from the sending rate)."""
        now = time.monotonic()
        if self._first_send is None:
            self._first_send = now
        self._sends.append(now)

    def success(self, latency_s: float | None = None) -> None:
        """Record an answered call (and how long it took)."""
        now = time.monotonic()
        self._successes.append(now)
        if self._first_success is None:
            self._first_success = now
        if latency_s is not None:
            self.latency_s = latency_s if self.latency_s is None else 0.9 * self.latency_s + 0.1 * latency_s
        if self.rate is not None:
            # The probe cap counts the successes over the time observed so far (in the first second
            # that is more than the floor, which never overstates): probing may overshoot, a cut may not.
            # That time starts at the first answer, not the first send: no answer can come back within
            # the first round trip, and counting it held the pace of a 200 ms endpoint at 256 in flight
            # under what its answers supported for the whole first second.
            cap = self.probe * max(1.0, len(self._successes) / self._span(now, self._first_success))
            self.rate = max(self.rate, min(self.rate * (1.0 + self.increase), cap))

    def rate_limited(self) -> bool:
        """Record a 429; True when it engaged the limiter (the first 429): the caller then pauses every
        sender for the Retry-After, so the first wave of 429s does not retry together (after that, the
        pacing spaces the retries)."""
        now = time.monotonic()
        self._limited.append(now)
        cooldown = min(self.max_cooldown_s, max(self.min_cooldown_s, self.latency_s or 0.0))
        if not self.enabled or now - self._last_cut < cooldown:
            return False
        if self.rate is not None and self._first_success is None:
            # No round trip has completed yet: every 429 so far answered faster than any
            # success could, so "no successes" is no share yet (a second cut here halved the pace of
            # the first wave on nothing but the latency).
            return False
        self._last_cut = now
        self._trim(now)
        share = len(self._limited) / (len(self._limited) + len(self._successes))
        first = self.rate is None
        current = len(self._sends) / self._span(now) if first else self.rate
        self.rate = max(1.0, self.floor(now), current * max(self.decrease, 1.0 - share))
        self.cuts += 1
        return first

    def reserve(self) -> float:
        """Seconds to wait before the next request (0 while no 429 was seen, or when off)."""
        if self.rate is None:
            return 0.0
        rate = max(self.rate, self.floor())
        if self._bucket is None:
            self._bucket = RateBucket(rate * 60, burst_s=self.burst_s)
        elif abs(self._bucket.rate - rate) > 1e-9:
            self._bucket.set_rate(rate)
        return self._bucket.reserve(1)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={env[name]!r}: expected 1 or 0")


def _number(env: Mapping[str, str], name: str) -> float | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number") from None
    if number <= 0:
        raise ValueError(f"{name}={value!r}: expected a number > 0")
    return number


@dataclass(frozen=True)
class EngineLimits:
    """Concurrency, rate limits, timeout and budget of one endpoint (see the module docstring)."""

    concurrency: int = 256
    rpm: float | None = None
    tpm: float | None = None
    tpm_in: float | None = None
    tpm_out: float | None = None
    timeout_s: float = 120.0
    budget_usd: float | None = None
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float | None = None  # off by default: see the module docstring
    adaptive: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "EngineLimits":
        """Read the ``DISTILL_TEACHER_*`` variables; a malformed value is an error naming it."""
        concurrency = _number(env, "DISTILL_TEACHER_CONCURRENCY")
        timeout = _number(env, "DISTILL_TEACHER_TIMEOUT_S")
        return cls(
            concurrency=int(concurrency) if concurrency else cls.concurrency,
            rpm=_number(env, "DISTILL_TEACHER_RPM"),
            tpm=_number(env, "DISTILL_TEACHER_TPM"),
            tpm_in=_number(env, "DISTILL_TEACHER_TPM_IN"),
            tpm_out=_number(env, "DISTILL_TEACHER_TPM_OUT"),
            timeout_s=timeout or cls.timeout_s,
            budget_usd=_number(env, "DISTILL_TEACHER_BUDGET_USD"),
            connect_timeout_s=_number(env, "DISTILL_TEACHER_CONNECT_TIMEOUT_S") or cls.connect_timeout_s,
            first_byte_timeout_s=_number(env, "DISTILL_TEACHER_FIRST_BYTE_TIMEOUT_S"),
            adaptive=_flag(env, "DISTILL_TEACHER_ADAPTIVE", cls.adaptive),
        )


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A tokenizer-free estimate of a chat prompt's tokens: ~4 characters a token plus 4 per message."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages) + 2
