"""Benchmarks: run as modules (``python -m bench.<name>``), never collected as tests."""
