"""Benchmarks: runequeue against the peer libraries, on the same Redis, in one run."""
