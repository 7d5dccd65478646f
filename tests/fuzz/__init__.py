"""Fuzzing of the admission endpoints: structure-aware (hypothesis) and byte-level (mutated golden fixtures)."""
