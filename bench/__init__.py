"""Benchmarks of arcanos-flows against what a user would write instead (run: ``python -m bench``)."""
