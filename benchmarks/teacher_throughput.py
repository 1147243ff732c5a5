"""Teacher engine throughput against the local OpenAI-compatible server; prints JSON.

    python benchmarks/teacher_throughput.py [--quick] [--peers naive,curator,distilabel] [--no-install]

For each latency (0 ms and 500 ms) one server process runs (`python -m dagster_project.teacher.server
--canned`, its own process so it does not share the clients' core and GIL); every client runs in its own
process (`throughput_drivers.py`) against that same server with the same workload: unique short chat
requests, at 1, 16, 64, 256 and 1,024 in flight. Clients: distill's engine (cache on, validation on),
a naive baseline (openai SDK default httpx client + asyncio.gather), and the peers bespokelabs-curator and
distilabel, each installed in a throwaway venv under /tmp (never a project dependency); a peer that will
not install or run offline is reported with its error.

At 500 ms the ideal is min(in_flight / 0.5 s, the engine's own 0 ms ceiling); the JSON gives each
engine result's fraction of it. At 0 ms the figure is a CPU ceiling: client and server each need a core,
so on a shared 2-core machine it measures whichever is slower (the JSON records the CPU count and load).
``cpu_rps`` (requests per CPU-second of the client process) is the figure that does not depend on how
busy the machine is. What limits: the client's CPU per request (engine with its default `http`
transport ~0.15-0.25 ms: the request, hashing, the cache append, validation; the server takes about as
much); at 1,024 in flight the first wave also pays for opening 1,024 connections, on both sides, and the
last wave ends half-empty, which four waves do not amortise: `--waves 16` measures closer to the steady
state of a long job. Results kept in ``benchmarks/results/``.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "throughput_drivers.py"
PEER_DIR = Path(os.environ.get("DISTILL_BENCH_PEER_DIR", "/tmp/issue3-peers"))
PEER_PACKAGES = {"curator": "bespokelabs-curator", "distilabel": "distilabel[openai]"}
IN_FLIGHT = [1, 16, 64, 256, 1024]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The canned offline teacher server in its own process."""

    def __init__(self, latency_ms: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "dagster_project.teacher.server", "--port", str(self.port), "--canned"]
        cmd += ["--latency-ms", str(latency_ms)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError("benchmark server did not start")

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5).read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def peer_python(name: str, install: bool) -> tuple[str | None, str | None]:
    """The throwaway venv's python for a peer (created on demand), or None and why not."""
    if name in ("engine", "naive"):
        return sys.executable, None
    venv = PEER_DIR / name
    python = venv / "bin" / "python"
    if not python.exists():
        if not install:
            return None, f"no venv at {venv} (run without --no-install to create it)"
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", PEER_PACKAGES[name]],
                check=True,
                capture_output=True,
                text=True,
                timeout=1200,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            err = getattr(exc, "stderr", "") or str(exc)
            return None, f"pip install {PEER_PACKAGES[name]} failed: {err.strip()[-400:]}"
    return str(python), None


def drive(python: str, client: str, url: str, n: int, in_flight: int, timeout: float) -> dict:
    cfg = {"base_url": url, "n": n, "in_flight": in_flight, "nonce": uuid.uuid4().hex[:8]}
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    try:
        proc = subprocess.run(
            [python, str(DRIVER), client, json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"in_flight": in_flight, "n": n, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"in_flight": in_flight, "n": n, "error": (proc.stderr.strip() or "no output")[-500:]}
    out = json.loads(lines[-1])
    out.pop("client", None)
    if "rps" in out:
        out["rps"] = round(out["rps"], 1)
    return {"in_flight": in_flight, **out}


def requests_for(latency_ms: float, in_flight: int, quick: bool, waves: int = 4) -> int:
    if latency_ms == 0:
        return 1000 if quick else 2000
    waves = 2 if quick else waves  # whole waves of in_flight requests, so the ideal is exact
    return max(4, in_flight * waves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and peer points")
    parser.add_argument("--peers", default="naive,curator,distilabel", help="comma list, or '' for none")
    parser.add_argument("--no-install", action="store_true", help="do not create missing peer venvs")
    parser.add_argument("--latencies", default="0,500")
    parser.add_argument(
        "--waves",
        type=int,
        default=4,
        help="requests per in-flight slot at 500 ms; the first wave also opens every connection and the "
        "last one ends half-empty, so more waves approach the steady state of a long job",
    )
    args = parser.parse_args()

    peers = [p for p in args.peers.split(",") if p]
    peer_points = [256, 1024] if args.quick else [16, 256, 1024]
    pythons = {name: peer_python(name, not args.no_install) for name in ["engine", *peers]}
    result: dict = {
        "benchmark": "teacher_throughput",
        "quick": args.quick,
        "waves_at_500ms": 2 if args.quick else args.waves,
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "workload": "unique short chat requests, canned 200 answers; every client in its own process, "
        "the server in another",
        "clients": {},
    }
    for name, (python, why) in pythons.items():
        if python is None:
            result["clients"][name] = {"error": why}
    ceiling = None
    for latency in [float(x) for x in args.latencies.split(",")]:
        server = Server(latency)
        try:
            for name, (python, _) in pythons.items():
                if python is None:
                    continue
                points = IN_FLIGHT if name in ("engine", "naive") else peer_points
                runs = []
                for k in points:
                    n = requests_for(latency, k, args.quick, args.waves)
                    timeout = 60 + n / max(1.0, min(k / max(latency, 1) * 1000, 50)) * 2
                    run = drive(python, name, server.url, n, k, min(timeout, 300))
                    runs.append(run)
                    if "error" in run and name not in ("engine", "naive"):
                        break  # a peer that fails once fails everywhere: report it, move on
                result["clients"].setdefault(name, {})[f"{latency:g}ms"] = runs
            result.setdefault("server_stats", {})[f"{latency:g}ms"] = server.stats()
        finally:
            server.close()
        if latency == 0:
            ceiling = max((r.get("rps", 0) for r in result["clients"]["engine"]["0ms"]), default=None)
    result["engine_0ms_ceiling_rps"] = ceiling and round(ceiling, 1)
    for runs in [result["clients"].get("engine", {}).get("500ms", [])]:
        for run in runs:
            if "rps" in run and ceiling:
                ideal = min(run["in_flight"] / 0.5, ceiling)
                run["ideal_rps"] = round(ideal, 1)
                run["fraction_of_ideal"] = round(run["rps"] / ideal, 3)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
