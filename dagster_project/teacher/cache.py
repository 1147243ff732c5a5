"""A content-addressed cache of teacher responses, keyed by the sha256 of the full request.

Storage is append-only JSONL, one shard file per process run (``<host>-<pid>-<time>.jsonl``), so parallel
processes never write the same file and a crash can only tear the line being written: a reader skips a
torn line, so a ``kill -9`` loses at most the requests still in flight and a rerun hits every finished one.
Lines are flushed to the OS at once (they survive a killed process; ``fsync`` is left out on purpose:
only a power loss could lose them, and then only the paid calls of the last seconds).

Location: ``$DISTILL_TEACHER_CACHE_DIR`` or ``<repo root>/.cache/teacher/``.
Mode (``$DISTILL_TEACHER_CACHE_MODE``): ``read-write`` (default), ``replay`` (a miss is an error), ``off``.
"""

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

CacheMode = Literal["read-write", "replay", "off"]
MODES: tuple[str, ...] = ("read-write", "replay", "off")
REPO_ROOT = Path(__file__).resolve().parents[2]


class CacheMissError(LookupError):
    """Replay mode found no cached response for a request."""


def canonical_json(request: Mapping[str, Any]) -> str:
    """The canonical JSON of a request: sorted keys, no whitespace (what its key hashes)."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def key_of(canonical: str) -> str:
    """The cache key of a request given its canonical JSON."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def request_key(request: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of the full request."""
    return key_of(canonical_json(request))


def describe_request(request: Mapping[str, Any]) -> str:
    """A short human description of a request for error messages: model and the start of the last message."""
    messages = request.get("messages") or []
    last = " ".join(str(messages[-1].get("content", "")).split())[:120] if messages else ""
    return f"model={request.get('model')!r}, last message {last!r}"


class ResponseCache:
    """Content-addressed response cache over JSONL shards; see the module docstring."""

    def __init__(self, directory: str | Path | None = None, mode: str | None = None):
        self.mode: str = mode or os.environ.get("DISTILL_TEACHER_CACHE_MODE") or "read-write"
        if self.mode not in MODES:
            raise ValueError(
                f"DISTILL_TEACHER_CACHE_MODE={self.mode!r}: allowed values are {', '.join(MODES)}."
            )
        env_dir = os.environ.get("DISTILL_TEACHER_CACHE_DIR")
        self.directory = Path(directory or env_dir or REPO_ROOT / ".cache" / "teacher")
        # key -> (shard path, byte offset of its line); records are read back on a hit, not kept in memory.
        self._index: dict[str, tuple[Path, int]] = {}
        self._shard: Path | None = None
        self._fh: Any = None
        if self.mode != "off":
            self._load_index()

    def _load_index(self) -> None:
        if not self.directory.is_dir():
            return
        for shard in sorted(self.directory.glob("*.jsonl")):
            with shard.open("rb") as fh:
                offset = 0
                for line in fh:
                    try:
                        record = json.loads(line)
                        key = record["key"] if isinstance(record.get("response"), dict) else None
                    except (ValueError, KeyError, TypeError, AttributeError):
                        key = None  # a line torn by a killed process
                    # A line without a response object (torn, or written by something else) is skipped:
                    # that request is simply asked again.
                    if key is not None:
                        self._index.setdefault(key, (shard, offset))
                    offset += len(line)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str, request: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The cached response for `key`, or None; in replay mode a miss raises CacheMissError."""
        if self.mode == "off":
            return None
        where = self._index.get(key)
        if where is None:
            if self.mode == "replay":
                what = describe_request(request) if request is not None else "request"
                raise CacheMissError(
                    f"teacher cache miss in replay mode (DISTILL_TEACHER_CACHE_MODE=replay) for {what}, "
                    f"key {key[:16]}..., cache dir {self.directory}. Run once in read-write mode to fill it."
                )
            return None
        shard, offset = where
        with shard.open("rb") as fh:
            fh.seek(offset)
            return json.loads(fh.readline())["response"]

    def put(
        self,
        key: str,
        request: Mapping[str, Any],
        response: Mapping[str, Any],
        canonical: str | None = None,
    ) -> None:
        """Append one response (a no-op unless the mode is read-write).

        `canonical`: the request's `canonical_json`, when the caller has it (it hashed it for the key),
        is written as is instead of encoding the request again.
        """
        if self.mode != "read-write" or key in self._index:
            return
        if self._fh is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
            self._shard = self.directory / name
            self._fh = self._shard.open("ab")
        if canonical is None:
            canonical = canonical_json(request)
        answer = json.dumps(response, ensure_ascii=False, sort_keys=True, default=str)
        line = f'{{"created":{time.time()!r},"key":"{key}","request":{canonical},"response":{answer}}}\n'
        data = line.encode("utf-8")
        offset = self._fh.tell()
        self._fh.write(data)  # one write of the whole line: a kill tears at most this line
        self._fh.flush()
        assert self._shard is not None
        self._index[key] = (self._shard, offset)

    def close(self) -> None:
        """Close the shard file (entries are already on disk)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
