"""Distill: a declarative build system for distilling LLM skills into small models."""
