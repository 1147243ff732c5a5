"""Metrics the evaluate stage reports (Dagster-free; numpy only, sentence-transformers optional).

Modules, each with its own docstring on what every figure means and where its definition comes from:
- `qa`: SQuAD exact match / token F1, max over several gold answers, multi-turn (CoQA/QuAC) per-turn F1.
- `classification`: label-word mapping of generated text, accuracy, macro-F1, per-class P/R/F1, confusion.
- `agreement`: Cohen's and Fleiss' kappa, judge vs rater majority, bootstrap intervals, success rate,
  position-swap consistency of pairwise judges.
- `diversity`: distinct-n, self-BLEU, entity entropy, pairwise / label-wise cosine similarity and MAUVE
  with a pluggable embedder (sentence-transformers if installed, else TF-IDF; results name the backend).
"""

from dagster_project.metrics.qa import aggregate, exact_match, normalize_answer, score_pairs, token_f1

__all__ = ["aggregate", "exact_match", "normalize_answer", "score_pairs", "token_f1"]
