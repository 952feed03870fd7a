"""Fakes for tests and benchmarks (never imported by the pipeline): the Yahoo emulator."""
