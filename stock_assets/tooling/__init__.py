"""Operator tooling: the `stock-assets` CLI, the demo, health, benchmarks."""
