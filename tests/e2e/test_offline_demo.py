"""The offline default end to end: a fresh copy of the repo builds all five artifacts with no
network, keys or GPU; the student loads with from_pretrained and beats the trivial baseline."""

import json
import time
from pathlib import Path

import pytest
import yaml
from helpers import ARTIFACTS, copy_repo, dvc, render_report_page

from dagster_project.stages.common import read_run_facts

pytestmark = pytest.mark.slow

# A hang guard, not a speed check. Unloaded, the demo takes about 3 minutes on 2 cores (issue 2 asks
# for under 5; the closing notes report it). CI shares its host: with half the CPU stolen, two-thread
# training ran 6x slower (3.9k instead of 22-26k tokens/s), so wall time is printed, never asserted.
DEMO_TIMEOUT_S = 2400


def cpu_ticks() -> dict[str, int]:
    """This machine's CPU time so far by kind (Linux /proc/stat, in clock ticks); empty elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return {}
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return dict(zip(names, map(int, fields[1:9]), strict=False))


# The root recipe's DVC plots: the student's dvclive curves and the report's charts.
CURVES = [f"assets/student/dvclive/plots/metrics/{c}.tsv" for c in
          ("train/loss", "train/learning_rate", "eval/loss")]  # fmt: skip
CHARTS = [f"assets/eval_report/plots/{c}.csv" for c in
          ("headline", "per_category", "confusion", "train_loss")]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("demo"))
    access_log = root.parent / "params_access.jsonl"
    import os

    os.environ["DISTILL_PARAMS_ACCESS_LOG"] = str(access_log)
    try:
        before, start = cpu_ticks(), time.time()
        dvc("repro", cwd=root, timeout=DEMO_TIMEOUT_S)
        elapsed, after = time.time() - start, cpu_ticks()
    finally:
        os.environ.pop("DISTILL_PARAMS_ACCESS_LOG")
    spent = {kind: after[kind] - before[kind] for kind in after}
    train = read_run_facts(root / "assets/student").get("train_log.json", {})
    print(
        json.dumps(
            {
                "offline_demo_dvc_repro_s": round(elapsed, 1),
                "train_tokens_per_second": train.get("tokens_per_second"),
                # The share of this VM's CPU time its host gave to other guests while the demo ran.
                "cpu_steal_share": round(spent["steal"] / max(1, sum(spent.values())), 3) if spent else None,
            }
        )
    )
    return root, access_log, elapsed


def test_all_five_artifacts_exist(demo):
    root, _, elapsed = demo
    for rel in [
        "assets/corpus/chunks.parquet",
        "assets/corpus/grounding.parquet",
        "assets/synthesized/examples.parquet",
        "assets/synthesized/rejects.parquet",
        "assets/synthesized/stats.json",
        "assets/deduped/train.parquet",
        "assets/deduped/val.parquet",
        "assets/deduped/removed.parquet",
        "assets/student/config.json",
        "assets/student/prompt_format.json",
        "assets/eval_report/metrics.json",
        "assets/eval_report/breakdown.json",
        "assets/eval_report/report.md",
        "assets/eval_report/predictions.parquet",
        "assets/base_model/config.json",
        "assets/base_model/model.safetensors",
    ]:
        assert (root / rel).exists(), rel


def test_student_checkpoint_loads_with_from_pretrained(demo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _, _ = demo
    model = AutoModelForCausalLM.from_pretrained(root / "assets/student")
    tokenizer = AutoTokenizer.from_pretrained(root / "assets/student")
    ids = tokenizer("Context: x\nQuestion: y\nAnswer:", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] >= len(tokenizer) - 1


def test_student_beats_the_trivial_baseline(demo):
    root, _, _ = demo
    metrics = json.loads((root / "assets/eval_report/metrics.json").read_text())
    print(json.dumps({"student": metrics["student"], "baseline": metrics["baseline"]}))
    assert metrics["student"]["token_f1"] > metrics["baseline"]["token_f1"]
    assert metrics["student"]["exact_match"] >= metrics["baseline"]["exact_match"]
    assert "baseline" in (root / "assets/eval_report/report.md").read_text().lower()


def test_the_distilled_student_reaches_most_of_the_teacher(demo):
    """The three numbers: the base model zero-shot, the distilled student, the teacher's reference
    answers (a real measurement, not empty answers) -- in metrics.json's headline and report.html."""
    root, _, _ = demo
    metrics = json.loads((root / "assets/eval_report/metrics.json").read_text())
    head = metrics["headline"]
    print(json.dumps(head))
    assert metrics["teacher_reference"]["n_unanswered"] == 0 and head["teacher"] > 0.5
    assert head["zero_shot"] is not None and head["student"] > head["zero_shot"]
    assert head["student_vs_teacher"] >= 0.8
    line = f"student {head['student']:.3f} / teacher {head['teacher']:.3f}"
    assert line in (root / "assets/eval_report/report.html").read_text()
    from dagster_project.dvc_integration.metadata import output_metadata

    meta = output_metadata(root, ("assets/eval_report/metrics.json",))
    assert line in meta["headline"].value and meta["metrics/headline.student_vs_teacher"].value >= 0.8


def test_the_demo_report_renders_in_a_browser(demo):
    """The pipeline's own report.html (not a fixture): every chart drawn, screenshot in test-artifacts."""
    root, _, _ = demo
    metrics = json.loads((root / "assets/eval_report/metrics.json").read_text())
    breakdown = json.loads((root / "assets/eval_report/breakdown.json").read_text())
    seen = render_report_page(root / "assets/eval_report/report.html", ARTIFACTS / "demo_report.png")
    # headline bars, per-category bars, training loss (a QA task has no confusion matrix)
    assert len(seen["boxes"]) == 3, seen["boxes"]
    assert all(b is not None and b["width"] > 100 and b["height"] > 100 for b in seen["boxes"])
    n_systems, n_categories = 4, len(breakdown["per_category"])  # student, baseline, zero-shot, teacher
    assert seen["bars"] == n_systems * 2 + n_systems * n_categories  # 2 headline metrics (EM, F1)
    for heading in ("Headline", "Per category", "10 best", "10 worst", "Training loss", "self-BLEU-5"):
        assert heading in seen["text"], heading
    assert f"{metrics['student']['token_f1']:.3f}" in seen["text"]
    assert (ARTIFACTS / "demo_report.png").stat().st_size > 10_000


def test_dvc_plots_metrics_and_dagster_curves_read_the_outputs(demo):
    """`dvc plots show` draws every declared plot (report charts and dvclive curves) from real data,
    `dvc metrics show` reads the headline, and the student's Dagster metadata draws the curves."""
    from dagster_project.dvc_integration.metadata import output_metadata

    root, _, _ = demo
    plots = json.loads(dvc("plots", "show", "--json", cwd=root).stdout)["data"]
    # `dvc plots show` lists every dvc.yaml's plots; the other recipes (examples/) are not built here.
    plots = {path: plot for path, plot in plots.items() if not path.startswith("examples/")}
    curves, charts = CURVES, CHARTS
    assert set(plots) == set(curves + charts)
    for name, (plot,) in plots.items():
        assert plot["type"] == "vega" and plot["content"]["data"]["values"], name
    train_points = len(plots[curves[0]][0]["content"]["data"]["values"])
    assert train_points > 10
    shown = json.loads(dvc("metrics", "show", "--json", cwd=root).stdout)
    headline = shown[""]["data"]["assets/eval_report/metrics.json"]["data"]
    assert headline["student"]["token_f1"] > headline["baseline"]["token_f1"]
    table = output_metadata(root, ("assets/student",))["curves"].value
    for curve in curves:
        assert f"`{curve}` |" in table, curve
    assert f"`{curves[0]}` | {train_points} |" in table


def test_dvc_plots_page_renders_offline(demo):
    """`dvc plots show` writes a page with Vega inline (the repo's .dvc/plots template), no CDN: every
    declared plot is drawn in a browser that has no network."""
    from helpers import CHROMIUM_ARGS, system_chromium
    from playwright.sync_api import sync_playwright

    root, _, _ = demo
    # `dvc plots show` draws every recipe's declared plots (the other recipes' unbuilt ones as empty charts).
    declared = set(json.loads(dvc("plots", "show", "--json", cwd=root).stdout)["data"])
    assert set(CURVES + CHARTS) <= declared
    dvc("plots", "show", "-o", "plots_page", cwd=root)
    html = (root / "plots_page/index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    chromium = system_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("http*://**", lambda route: route.abort())  # offline
            page.goto((root / "plots_page/index.html").as_uri(), wait_until="load")
            page.wait_for_timeout(2000)
            drawn = page.locator("canvas, svg.marks").count()
        finally:
            browser.close()
    assert drawn == len(declared), drawn  # 4 report charts + 4 training curves + other recipes' plots


def test_each_stage_reads_exactly_the_params_it_declares(demo):
    root, access_log, _ = demo
    declared = {
        name: stage.get("params", [])
        for name, stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items()
    }
    params = yaml.safe_load((root / "params.yaml").read_text())
    seen = {}
    for line in access_log.read_text().splitlines():
        entry = json.loads(line)
        module = next(a for a in entry["argv"] if "dagster_project" in a or a.endswith(".py"))
        stage = Path(module).stem.split(".")[-1]
        seen.setdefault(stage, set()).update(entry["accessed"])
    assert set(seen) == set(declared), "every stage must load its params through load_stage_params"
    for stage, keys in seen.items():
        sections = declared[stage]
        assert all(k.split(".")[0] in sections for k in keys), (stage, keys, sections)
        top_level = {f"{s}.{k}" for s in sections for k in params[s]}
        assert top_level <= keys, f"{stage} declares params it never reads: {sorted(top_level - keys)}"


def test_second_repro_runs_nothing(demo):
    root, _, _ = demo
    out = dvc("repro", cwd=root).stdout
    assert "Running stage" not in out, out
    # The root recipe's dvc.yaml: the other recipes under examples/ are not built here.
    assert json.loads(dvc("status", "dvc.yaml", "--json", cwd=root).stdout or "{}") == {}


def test_editing_a_source_named_in_params_makes_retrieve_and_downstream_stale(demo):
    """Last in this module (it edits the built demo): a source file named in `retrieve.sources` is a dep
    of retrieve, so editing it makes retrieve stale, and its new corpus makes synthesize stale (and, as
    each reruns, dedup, train and evaluate: DVC compares each stage's deps with its lock)."""
    root, _, _ = demo
    source = root / yaml.safe_load((root / "params.yaml").read_text())["retrieve"]["sources"][0]["path"]
    lines = source.read_text().splitlines()
    row = json.loads(lines[0])
    row["text"] += " It also keeps a lighthouse."
    source.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    status = json.loads(dvc("status", "dvc.yaml", "--json", cwd=root).stdout or "{}")
    assert list(status) == ["retrieve"], status
    dvc("repro", "-s", "dvc.yaml:retrieve", cwd=root)
    status = json.loads(dvc("status", "dvc.yaml", "--json", cwd=root).stdout or "{}")
    assert list(status) == ["synthesize"] and "assets/corpus" in json.dumps(status), status
