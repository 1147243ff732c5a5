"""One client per process for `teacher_throughput.py`: the same workload through each client.

    python throughput_drivers.py <client> '{"base_url": ..., "n": 1000, "in_flight": 64, "nonce": "x"}'

Clients: ``engine`` (distill's TeacherEngine, cache on), ``naive`` (openai SDK, default httpx client,
asyncio.gather under a semaphore), ``curator`` (bespokelabs-curator), ``distilabel`` (its OpenAILLM,
``generate`` one batch of ``in_flight`` inputs at a time). Each imports only its own library, so the peer
drivers run in throwaway venvs. Prints one JSON line: n, ok, wall_s, rps, cpu_rps (or error when it
failed). The clock starts after imports and client set-up (`_start`), when the first request is made.
"""

import asyncio
import json
import os
import sys
import tempfile
import time

_T0: list[float] = []


def _start() -> None:
    """Start the clock (wall and CPU) once imports and set-up are done."""
    _T0[:] = [time.perf_counter(), time.process_time()]


MODEL = "gpt-4o-mini"  # the canned server ignores it; peers look up known names for token counting


def messages(nonce: str, i: int) -> list[dict[str, str]]:
    """The workload: a short system and user message, unique per request (no cache hits)."""
    return [
        {"role": "system", "content": "Reply with JSON only."},
        {"role": "user", "content": f"Write one question about item {i} of run {nonce}."},
    ]


def run_engine(cfg: dict) -> int:
    from dagster_project.teacher.cache import ResponseCache
    from dagster_project.teacher.engine import TeacherEngine, TeacherRequest

    reqs = [TeacherRequest(messages(cfg["nonce"], i), MODEL, max_tokens=64) for i in range(cfg["n"])]
    with tempfile.TemporaryDirectory() as cache_dir:
        engine = TeacherEngine(
            cache=ResponseCache(cache_dir, "read-write"),
            env={"DISTILL_TEACHER_BASE_URL": cfg["base_url"], "OPENAI_API_KEY": "x"},
            concurrency=cfg["in_flight"],
            max_attempts=1,
            progress=False,
        )
        _start()
        results = engine.run(reqs)
        engine.cache.close()
    return sum(r.ok for r in results)


def run_naive(cfg: dict) -> int:
    import openai

    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=cfg["base_url"], api_key="x")  # SDK defaults throughout
        sem = asyncio.Semaphore(cfg["in_flight"])

        async def one(i: int) -> bool:
            async with sem:
                resp = await client.chat.completions.create(
                    model=MODEL, messages=messages(cfg["nonce"], i), max_tokens=64
                )
                return bool(resp.choices[0].message.content)

        _start()
        done = await asyncio.gather(*(one(i) for i in range(cfg["n"])), return_exceptions=True)
        await client.close()
        return sum(d is True for d in done)

    return asyncio.run(main())


def _stub_tiktoken() -> None:
    """tiktoken downloads its BPE files on first use; with no network, count ~4 characters a token.

    Curator uses token counts only for its TPM limiter and cost figures, which this benchmark sets out
    of reach, so the stub does not change what is measured.
    """
    try:
        import tiktoken
    except ImportError:
        return

    class _Approx:
        name = "approx-4-chars"

        def encode(self, text: str, **_: object) -> list[int]:
            return [0] * (len(text) // 4 + 1)

    tiktoken.get_encoding = lambda *a, **k: _Approx()  # type: ignore[assignment]
    tiktoken.encoding_for_model = lambda *a, **k: _Approx()  # type: ignore[assignment]


def run_curator(cfg: dict) -> int:
    tmp = tempfile.mkdtemp(prefix="curator-bench-")
    os.environ.update(
        {
            "TELEMETRY_ENABLED": "false",
            "CURATOR_DISABLE_CACHE": "1",
            "CURATOR_CACHE_DIR": tmp,
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENAI_API_KEY": "x",
            "CURATOR_VIEWER": "0",
        }
    )
    _stub_tiktoken()
    from bespokelabs import curator

    class Ask(curator.LLM):
        def prompt(self, row: dict) -> list[dict[str, str]]:
            return messages(cfg["nonce"], row["i"])

        def parse(self, row: dict, response: str) -> dict:
            return {"i": row["i"], "ok": bool(response)}

    llm = Ask(
        model_name=MODEL,
        backend="openai",
        generation_params={"max_tokens": 64},
        backend_params={
            "base_url": cfg["base_url"],
            "api_key": "x",
            "max_requests_per_minute": 10_000_000,
            "max_tokens_per_minute": 10_000_000_000,
            "max_concurrent_requests": cfg["in_flight"],
            "max_retries": 0,
            "require_all_responses": False,
        },
    )
    _start()
    out = llm([{"i": i} for i in range(cfg["n"])])
    dataset = getattr(out, "dataset", out)
    return sum(1 for row in dataset if row["ok"])


def run_distilabel(cfg: dict) -> int:
    from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(model=MODEL, base_url=cfg["base_url"], api_key="x", max_retries=0)
    llm.load()
    inputs = [messages(cfg["nonce"], i) for i in range(cfg["n"])]
    ok = 0
    step = cfg["in_flight"]
    _start()
    for start in range(0, len(inputs), step):
        outs = llm.generate(inputs=inputs[start : start + step], num_generations=1, max_new_tokens=64)
        ok += sum(1 for o in outs if o.get("generations") and o["generations"][0])
    return ok


CLIENTS = {"engine": run_engine, "naive": run_naive, "curator": run_curator, "distilabel": run_distilabel}


def main() -> None:
    client, cfg = sys.argv[1], json.loads(sys.argv[2])
    try:
        ok = CLIENTS[client](cfg)
    except Exception as exc:  # the benchmark reports a peer that will not run, with its error
        print(json.dumps({"client": client, "error": f"{type(exc).__name__}: {exc}"[:500]}))
        return
    wall, cpu = time.perf_counter() - _T0[0], time.process_time() - _T0[1]
    n = cfg["n"]
    # cpu_rps: requests per CPU-second of this process (its main thread's loop), a contention-free figure.
    out = {"client": client, "n": n, "ok": ok, "wall_s": round(wall, 3), "rps": n / wall}
    out["cpu_rps"] = round(n / cpu, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
