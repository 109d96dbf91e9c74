"""Benchmarks: ``python -m benchmarks run`` (see ``benchmarks/README.md``).

Separate from the test suite; only the quick smoke mode runs there.
"""
