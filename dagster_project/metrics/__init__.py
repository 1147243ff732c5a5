"""Metrics the evaluate stage reports (Dagster-free, dependency-free)."""

from dagster_project.metrics.qa import aggregate, exact_match, normalize_answer, score_pairs, token_f1

__all__ = ["aggregate", "exact_match", "normalize_answer", "score_pairs", "token_f1"]
