"""A seeded, procedurally generated fictional world: the offline demo's grounding corpus and gold test."""
