import json

import pytest

from dagster_project.teacher.cache import CacheMissError, ResponseCache, request_key

REQ = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "seed": 1, "schema": None}


def test_key_is_canonical_and_covers_every_field():
    assert request_key(REQ) == request_key(dict(reversed(list(REQ.items()))))
    assert request_key(REQ) != request_key({**REQ, "seed": 2})
    assert request_key(REQ) != request_key({**REQ, "schema": {"type": "object"}})


def test_roundtrip_across_instances(tmp_path):
    key = request_key(REQ)
    with ResponseCache(tmp_path, "read-write") as cache:
        assert cache.get(key) is None
        cache.put(key, REQ, {"content": "hi"})
        assert cache.get(key) == {"content": "hi"}
    assert ResponseCache(tmp_path).get(key) == {"content": "hi"}


def test_torn_last_line_is_skipped(tmp_path):
    """A process killed mid-write leaves a partial line: earlier entries still hit."""
    keys = [request_key({**REQ, "seed": i}) for i in range(3)]
    with ResponseCache(tmp_path, "read-write") as cache:
        for i, key in enumerate(keys):
            cache.put(key, {**REQ, "seed": i}, {"content": str(i)})
    shard = next(tmp_path.glob("*.jsonl"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 25])  # tear the last line
    cache = ResponseCache(tmp_path)
    assert [cache.get(k) for k in keys[:2]] == [{"content": "0"}, {"content": "1"}]
    assert cache.get(keys[2]) is None
    cache.put(keys[2], REQ, {"content": "2"})  # rewritten into a new shard
    cache.close()
    assert ResponseCache(tmp_path).get(keys[2]) == {"content": "2"}


def test_replay_miss_names_the_request(tmp_path):
    cache = ResponseCache(tmp_path, "replay")
    with pytest.raises(CacheMissError, match="replay mode.*model='m'.*hello there"):
        cache.get(request_key(REQ), REQ)


def test_off_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_MODE", "off")
    cache = ResponseCache()
    assert cache.directory == tmp_path / "c" and cache.mode == "off"
    cache.put("k", REQ, {"content": "x"})
    assert cache.get("k") is None and not (tmp_path / "c").exists()
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_MODE", "bogus")
    with pytest.raises(ValueError, match="read-write, replay, off"):
        ResponseCache()


def test_entries_are_self_describing(tmp_path):
    with ResponseCache(tmp_path) as cache:
        cache.put(request_key(REQ), REQ, {"content": "hi"})
    line = json.loads(next(tmp_path.glob("*.jsonl")).read_text())
    assert line["request"] == REQ and line["key"] == request_key(REQ)
