"""Benchmark: curation at scale. Prints one JSON object.

    python benchmarks/dedup.py [--sizes 10000,100000,1000000] [--datasketch-python /tmp/bench-venv/bin/python]

For each size, seeded synthetic short texts (~30 words, 20% planted duplicates: exact, near/edit-distance,
reordered, plus look-alikes that must stay; dagster_project/curation/synthetic.py) are generated once, then
every measured workload runs in its own subprocess, so its peak memory (VmHWM of its own address space,
which counts numpy buffers, unlike tracemalloc) and wall time are its own:

- `near`: our near-duplicate search on the normalized texts: MinHash-LSH candidates (numpy) + rapidfuzz
  verification (token_sort_ratio >= 95) + union-find clusters - the same workload the baselines run;
- `stage`: the whole `dedup` stage function (filters, decontamination against a 150-row evaluation set
  drawn from the data, exact + near dedup, judge off, report, split) on the texts as questions;
- `datasketch`: the near workload through datasketch's MinHashLSH (same 20 bands x 6 rows, `MinHash.bulk`,
  an insertion session, one query per text, the same rapidfuzz verification), run by another venv's python
  (datasketch is no project dependency; `--datasketch-python`); skipped, with the reason, when missing or
  when it would take longer than `--datasketch-timeout` (then extrapolated linearly from the last size);
- `cdist`: rapidfuzz all-pairs `process.cdist` (sizes up to --cdist-max): the exact oracle for recall.

Recall/precision (on sizes with the oracle): `oracle_pair_recall` = oracle pairs (score >= 95) whose texts
land in one cluster; `oracle_precision`, `planted_recall`, `planted_precision`, `lookalikes_merged`: see
`synthetic.cluster_quality`. The child entry points import only the standard library at module level, so
the datasketch venv can run this file too.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dagster_project, also for the children
THRESHOLD = 95.0
SCORER = "token_sort_ratio"
BANDS, ROWS = 20, 6


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM of its own address space. (ru_maxrss is not used on
    Linux: after fork+exec it starts from the parent's RSS at fork, so a child of a parent holding 1M
    generated texts would report at least the parent's 1.6 GB.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------------------------------------------
# Children: each prints one JSON line


def child_near(data: Path, out: Path) -> dict:
    import numpy as np
    import polars as pl

    from dagster_project.curation import clusters, minhash

    keys = pl.read_parquet(data)["key"]
    rss_loaded = _peak_rss_mb()
    start = time.perf_counter()
    cfg = minhash.LSHConfig(num_perm=BANDS * ROWS, bands=BANDS, rows=ROWS)
    pairs = minhash.near_duplicate_pairs(keys, THRESHOLD, SCORER, cfg)
    labels = clusters.connected_components(keys.len(), pairs.i, pairs.j)
    wall = time.perf_counter() - start
    np.save(out, labels)
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "candidate_pairs": pairs.n_candidates,
        "verified_pairs": int(pairs.i.size),
        "texts_removed": int((labels != np.arange(labels.size)).sum()),
    }


def child_stage(data: Path, out: Path) -> dict:
    import polars as pl
    import yaml

    from dagster_project.stages import dedup

    texts = pl.read_parquet(data)
    n = texts.height
    df = texts.select(
        "id",
        (pl.int_range(pl.len()) // 4).cast(pl.String).alias("passage_id"),
        pl.lit("").alias("context"),
        pl.col("text").alias("question"),
        pl.col("text").str.extract(r"(\S+)$").alias("answer"),
    )
    evals = df.gather(list(range(7, n, max(1, n // 150)))[:150]).select(
        pl.lit("bench_eval.jsonl").alias("eval_set"),
        pl.format("eval-{}", pl.int_range(pl.len())).alias("id"),
        "question",
        "answer",
        "context",
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["dedup"]
    params["key_fields"] = ["question"]
    rss_loaded = _peak_rss_mb()
    start = time.perf_counter()
    train, val, removed, report = dedup.dedup(df, evals, params)
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "n_kept": train.height + val.height,
        "removed": {k: v for k, v in report["removed"].items() if v},
        "step_seconds": report["seconds"],
    }


def child_datasketch(data: Path, out: Path) -> dict:
    import numpy as np
    from datasketch import MinHash, MinHashLSH
    from rapidfuzz import fuzz, process

    keys = data.read_text(encoding="utf-8").split("\n")
    rss_loaded = _peak_rss_mb()
    start = time.perf_counter()
    tokens = [[w.encode() for w in k.split()] for k in keys]
    hashes = MinHash.bulk(tokens, num_perm=BANDS * ROWS)
    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    with lsh.insertion_session() as session:
        for i, m in enumerate(hashes):
            session.insert(i, m, check_duplication=False)
    ci, cj = [], []
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j > i:
                ci.append(i)
                cj.append(j)
    ci_a, cj_a = np.array(ci, dtype=np.int64), np.array(cj, dtype=np.int64)
    srt = [" ".join(sorted(k.split())) for k in keys]  # token_sort_ratio == ratio of sorted words
    scores = process.cpdist(
        [srt[i] for i in ci], [srt[j] for j in cj], scorer=fuzz.ratio, score_cutoff=THRESHOLD, workers=-1
    )
    ok = scores >= THRESHOLD
    wall = time.perf_counter() - start
    np.save(out, np.stack([ci_a[ok], cj_a[ok]]))
    import datasketch

    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "candidate_pairs": int(ci_a.size),
        "verified_pairs": int(ok.sum()),
        "datasketch_version": datasketch.__version__,
    }


def child_cdist(data: Path, out: Path) -> dict:
    import numpy as np
    import polars as pl

    from dagster_project.curation import clusters, synthetic

    keys = pl.read_parquet(data)["key"].to_list()
    rss_loaded = _peak_rss_mb()
    start = time.perf_counter()
    i, j = synthetic.oracle_pairs(keys, SCORER, THRESHOLD)
    clusters.connected_components(len(keys), i, j)
    wall = time.perf_counter() - start
    np.save(out, np.stack([i, j]))
    return {"wall_s": round(wall, 2), "peak_rss_mb": _peak_rss_mb(), "rss_after_load_mb": rss_loaded}


CHILDREN = {"near": child_near, "stage": child_stage, "datasketch": child_datasketch, "cdist": child_cdist}

# ---------------------------------------------------------------------------------------------------
# Parent


def _run_child(python: str, kind: str, data: Path, out: Path, timeout: float) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", kind, "--data", str(data), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout}
    if proc.returncode != 0:
        return {"status": "failed", "stderr_tail": proc.stderr[-800:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["status"] = "ok"
    result["process_s"] = round(time.perf_counter() - start, 1)
    return result


def _prepare(size: int, work: Path, seed: int) -> tuple[Path, Path, object]:
    import polars as pl

    from dagster_project.curation import normalize, synthetic

    df = synthetic.planted_texts(size, seed=seed)
    df = df.with_columns(key=normalize.normalize_series(df["text"], list(normalize.STEPS)))
    parquet = work / f"texts_{size}.parquet"
    df.write_parquet(parquet)
    txt = work / f"keys_{size}.txt"
    txt.write_text("\n".join(df["key"].to_list()), encoding="utf-8")
    return parquet, txt, df.select("kind", "source").with_columns(pl.col("source").cast(pl.Int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated text counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasketch-python", default="/tmp/bench-venv/bin/python")
    parser.add_argument("--datasketch-timeout", type=float, default=600.0)
    parser.add_argument("--cdist-max", type=int, default=10_000, help="largest size for the all-pairs oracle")
    parser.add_argument("--skip-stage", action="store_true", help="measure only the near-dup workloads")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.data, args.out)))
        return

    import numpy as np

    from dagster_project.curation import clusters, synthetic

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    ds_python = args.datasketch_python
    ds_ok = Path(ds_python).exists() and (
        subprocess.run(
            [ds_python, "-c", "import datasketch, rapidfuzz, numpy"], capture_output=True
        ).returncode
        == 0
    )
    result: dict = {
        "benchmark": "dedup near-duplicate search and stage",
        "threshold": THRESHOLD,
        "scorer": SCORER,
        "lsh": {"bands": BANDS, "rows": ROWS, "shingles": "word unigrams"},
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other jobs ran meanwhile (see load averages); timings are upper bounds",
        "datasketch": "available" if ds_ok else f"unavailable: no datasketch/rapidfuzz/numpy at {ds_python}",
        "sizes": {},
    }
    last_ds: tuple[int, float] | None = None
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        work = Path(tmp)
        for size in sizes:
            t0 = time.perf_counter()
            parquet, txt, truth = _prepare(size, work, args.seed)
            entry: dict = {"generate_s": round(time.perf_counter() - t0, 1)}
            labels_file = work / f"labels_{size}.npy"
            entry["ours_near"] = _run_child(sys.executable, "near", parquet, labels_file, 3600)
            if not args.skip_stage:
                entry["ours_stage"] = _run_child(sys.executable, "stage", parquet, work / "unused.npy", 3600)
            ds_file = work / f"ds_{size}.npy"
            if not ds_ok:
                entry["datasketch"] = {"status": "unavailable"}
            elif last_ds and last_ds[1] * size / last_ds[0] > args.datasketch_timeout:
                entry["datasketch"] = {
                    "status": "skipped",
                    "extrapolated_wall_s": round(last_ds[1] * size / last_ds[0], 1),
                    "why": f"linear extrapolation from {last_ds[0]} texts exceeds --datasketch-timeout",
                }
            else:
                entry["datasketch"] = _run_child(
                    ds_python, "datasketch", txt, ds_file, args.datasketch_timeout
                )
                if entry["datasketch"]["status"] == "ok":
                    last_ds = (size, entry["datasketch"]["wall_s"])
                elif last_ds:
                    entry["datasketch"]["extrapolated_wall_s"] = round(last_ds[1] * size / last_ds[0], 1)
            ours = entry["ours_near"]
            if ours.get("status") == "ok" and entry["datasketch"].get("wall_s"):
                entry["speedup_vs_datasketch"] = round(entry["datasketch"]["wall_s"] / ours["wall_s"], 1)
            if size <= args.cdist_max:
                oracle_file = work / f"oracle_{size}.npy"
                entry["rapidfuzz_cdist"] = _run_child(sys.executable, "cdist", parquet, oracle_file, 3600)
                if entry["rapidfuzz_cdist"]["status"] == "ok":
                    oi, oj = np.load(oracle_file)
                    kinds, sources = truth["kind"].to_list(), truth["source"].to_numpy()
                    entry["rapidfuzz_cdist"]["oracle_pairs"] = int(oi.size)
                    if ours.get("status") == "ok":
                        labels = np.load(labels_file)
                        entry["ours_quality"] = synthetic.cluster_quality(labels, oi, oj, kinds, sources)
                        # verified pairs are oracle pairs (same scorer and threshold): direct pair recall
                        entry["ours_quality"]["oracle_pair_recall_direct"] = round(
                            ours["verified_pairs"] / max(1, oi.size), 5
                        )
                    if entry["datasketch"].get("status") == "ok":
                        di, dj = np.load(ds_file)
                        ds_labels = clusters.connected_components(size, di, dj)
                        entry["datasketch_quality"] = synthetic.cluster_quality(
                            ds_labels, oi, oj, kinds, sources
                        )
                        entry["datasketch_quality"]["oracle_pair_recall_direct"] = round(
                            di.size / max(1, oi.size), 5
                        )
            result["sizes"][str(size)] = entry
            print(json.dumps({size: entry}), file=sys.stderr, flush=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
