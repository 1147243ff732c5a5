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

=============================  =============================================================
``DISTILL_TEACHER_CONCURRENCY``  requests in flight at most (default 256)
``DISTILL_TEACHER_RPM``          requests per minute (default: no limit)
``DISTILL_TEACHER_TPM``          input + output tokens per minute (default: no limit)
``DISTILL_TEACHER_TPM_IN``       input (prompt) tokens per minute (default: no limit)
``DISTILL_TEACHER_TPM_OUT``      output (completion) tokens per minute (default: no limit)
``DISTILL_TEACHER_TIMEOUT_S``    per-request timeout in seconds (default 120)
``DISTILL_TEACHER_BUDGET_USD``   hard budget cap for one run (default: none)
=============================  =============================================================
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
    """Learns an endpoint's request rate from its 429s when no (or too high an) RPM is configured.

    Off until the first 429; then it paces senders at 90% of the rate that was just succeeding, cuts the
    rate by 30% on every further 429 (at most once per `cooldown_s`) and raises it by 1% per success
    (AIMD, as TCP does): a burst of senders that hit an unknown limit settles just under it instead of
    waking together after every pause and drawing a 429 storm.
    """

    def __init__(self, cooldown_s: float = 0.5):
        self.bucket: RateBucket | None = None
        self.cooldown_s = cooldown_s
        self._last_cut = 0.0
        self._successes: deque[float] = deque(maxlen=10_000)

    def success(self) -> None:
        """Record an answered call."""
        now = time.monotonic()
        self._successes.append(now)
        if self.bucket is not None:
            self.bucket.set_rate(self.bucket.rate * 1.01)

    def rate_limited(self) -> None:
        """Record a 429."""
        now = time.monotonic()
        if now - self._last_cut < self.cooldown_s:
            return
        self._last_cut = now
        if self.bucket is None:
            recent = sum(1 for t in self._successes if now - t <= 1.0)
            self.bucket = RateBucket(max(1.0, 0.9 * recent) * 60, burst_s=0)
        else:
            self.bucket.set_rate(self.bucket.rate * 0.7)

    def reserve(self) -> float:
        """Seconds to wait before the next request (0 while no 429 was seen)."""
        return 0.0 if self.bucket is None else self.bucket.reserve(1)


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
        )


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A tokenizer-free estimate of a chat prompt's tokens: ~4 characters a token plus 4 per message."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages) + 2
