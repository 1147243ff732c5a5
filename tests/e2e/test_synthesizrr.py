"""The SynthesizRR recipe end to end, offline: a fresh copy builds every arm and the comparison report;
editing one prompt reruns only that recipe's affected stages; a copied folder is a new recipe."""

import json
import shutil
import time

import pytest
import yaml
from helpers import copy_repo, dvc, run, stages_ran

pytestmark = pytest.mark.slow

RECIPE = "examples/synthesizrr"
ARMS = ["rr_0shot", "rr_3shot", "rr_bm25", "fewgen_0shot", "fewgen_32shot"]
FIGURES = [
    "n_examples", "n_train", "label_entropy_bits", "distinct_1", "distinct_2", "distinct_3",
    *[f"self_bleu_{n}" for n in range(1, 6)], "entity_entropy_bits", "mean_pairwise_cosine",
    "labelwise_cosine", "mauve_vs_gold", "label_preservation", "student_accuracy", "student_macro_f1",
]  # fmt: skip
TIMEOUT_S = 3600  # a hang guard on a shared CI host, not a speed check (wall time is printed)


def ran(output: str) -> set[str]:
    return stages_ran(output, RECIPE)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("synthesizrr"))
    start = time.perf_counter()
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    print(f"\nSynthesizRR recipe built offline in {time.perf_counter() - start:.0f}s")
    return root, out


def test_every_arm_has_every_figure(built):
    root, out = built
    stages = {"retrieve", "retrieve_bm25", "retrieve_icl", "compare", *(f"synthesize_{a}" for a in ARMS)}
    stages |= {f"{kind}@{a}" for kind in ("dedup", "train", "evaluate") for a in ARMS}
    assert ran(out) == stages  # a fresh copy builds every stage of the recipe, and only those
    metrics = json.loads((root / RECIPE / "assets/comparison/metrics.json").read_text())
    assert sorted(metrics["arms"]) == sorted(ARMS)
    for arm in ARMS:
        figures = metrics["arms"][arm]
        missing = [f for f in FIGURES if figures.get(f) is None]
        assert not missing, (arm, missing)
        assert 0 <= figures["mauve_vs_gold"] <= 1 and 0 <= figures["label_preservation"] <= 1
        assert set(figures["label_counts"]) == {"politics", "trade", "science", "seafaring", "nature"}
    report = (root / RECIPE / "assets/comparison/report.md").read_text()
    for label in ("self-BLEU-5", "MAUVE vs gold", "label preservation", "student macro-F1", "mauve-text"):
        assert label in report
    print(report)
    assert json.loads(dvc("status", f"{RECIPE}/dvc.yaml", "--json", cwd=root).stdout or "{}") == {}


def test_editing_one_prompt_reruns_only_what_depends_on_it(built):
    root, _ = built
    root_status = dvc("status", "dvc.yaml", cwd=root).stdout
    prompt = root / RECIPE / "prompts/fewgen.yaml"
    prompt.write_text(
        prompt.read_text().replace("Reply with JSON only.", "Be concise. Reply with JSON only.")
    )
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    arms = [a for a in ARMS if a.startswith("fewgen")]
    fewgen = {f"synthesize_{a}" for a in arms} | {
        f"{k}@{a}" for k in ("dedup", "train", "evaluate") for a in arms
    }
    assert ran(out) == fewgen | {"compare"}, sorted(ran(out))
    assert dvc("status", "dvc.yaml", cwd=root).stdout == root_status  # the root recipe is untouched


def test_a_copied_folder_is_a_new_recipe(built):
    """Copy the folder, change only its params, prompts and data (a four-label task), build it."""
    root, _ = built
    new = root / "examples/mytopics"
    shutil.copytree(root / RECIPE, new, ignore=shutil.ignore_patterns("assets", "dvc.lock"))
    for name in ("seeds.jsonl", "gold_test.jsonl", "gold_train.jsonl"):
        path = new / "data" / name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] != "nature"))
    labels = yaml.safe_load((new / "data/labels.yaml").read_text())
    del labels["nature"]
    (new / "data/labels.yaml").write_text(yaml.safe_dump(labels))
    params = yaml.safe_load((new / "params.yaml").read_text())
    params["evaluate"]["labels"] = sorted(labels)
    params["retrieve"]["top_k"] = 5
    params["train"]["epochs"] = 3
    for arm in ("synthesize_fewgen_0shot", "synthesize_fewgen_32shot"):
        params[arm]["samples"] = 20
    (new / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prompt = new / "prompts/task_inversion.yaml"
    prompt.write_text(prompt.read_text().replace("short news dispatch", "short news bulletin"))
    listed = run(["distill", "recipes", "--project", str(root)], cwd=root).stdout
    assert "mytopics" in listed
    out = dvc("repro", "examples/mytopics/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    assert "compare" in stages_ran(out, "examples/mytopics")
    metrics = json.loads((new / "assets/comparison/metrics.json").read_text())
    for arm in ARMS:
        assert set(metrics["arms"][arm]["label_counts"]) <= set(labels)
        assert metrics["arms"][arm]["student_accuracy"] is not None
