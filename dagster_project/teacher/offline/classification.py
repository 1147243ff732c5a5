"""Offline handlers for classification-data prompts (SynthesizRR task inversion, FewGen)."""
