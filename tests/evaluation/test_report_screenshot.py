"""report.html renders in a real browser: headless Chromium (Debian's system binary) opens a report built from
a small fixture, every chart has a non-zero size, and a screenshot lands in test-artifacts/report.png."""

from helpers import ARTIFACTS, render_report_page

from dagster_project.evaluation.diversity import diversity_figures
from dagster_project.evaluation.report import render_report
from dagster_project.evaluation.scoring import score_systems
from dagster_project.evaluation.tasks import Classification


def _fixture_report() -> str:
    """A classification report (headline, per category, confusion matrix, loss curve, diversity)."""
    labels = ["positive", "negative", "neutral"]
    rows = [
        {"id": str(i), "text": f"review {i}", "label": labels[i % 3], "category": ["books", "films"][i % 2]}
        for i in range(12)
    ]
    task = Classification(labels)
    items = task.items(rows)
    student = [labels[i % 3] if i % 4 else labels[(i + 1) % 3] for i in range(12)]
    metrics, table = score_systems(task, items, {"student": student, "baseline": ["positive"] * 12})
    metrics |= {
        "gold_test": "fixture.jsonl",
        "baseline_definition": "most frequent",
        "baseline_answer": "positive",
    }
    metrics["diversity"] = diversity_figures(
        [f"Is Review {i} about Kordel or Anzanan?" for i in range(6)], 100, "tfidf", None, None, 0
    )
    history = [{"step": s, "loss": 3.0 / s} for s in range(1, 11)]
    _, html = render_report(metrics, table, "fixture-student", history)
    return html


def test_report_html_renders_its_charts(tmp_path):
    page_path = tmp_path / "report.html"
    page_path.write_text(_fixture_report(), encoding="utf-8")
    seen = render_report_page(page_path, ARTIFACTS / "report.png")
    boxes = seen["boxes"]
    # headline bars, per-category bars, a confusion matrix per system (student, baseline), training loss
    assert len(boxes) == 5, boxes
    assert all(b is not None and b["width"] > 100 and b["height"] > 100 for b in boxes), boxes
    assert seen["bars"] == 2 * 2 + 2 * 2  # 2 systems x 2 headline metrics + 2 systems x 2 categories
    assert seen["cells"] == 2 * 3 * 4  # 2 systems x 3 gold labels x (3 labels + <invalid>)
    for heading in ("Headline", "Per category", "Confusion matrix (student)", "Training loss", "Diversity"):
        assert heading in seen["text"]
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
