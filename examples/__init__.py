"""Runnable examples the README points to (tests run them)."""
