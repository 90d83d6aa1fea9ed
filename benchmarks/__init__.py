"""Benchmarks: speed and accuracy measurements, run as scripts (`python -m benchmarks.<name>`)."""
