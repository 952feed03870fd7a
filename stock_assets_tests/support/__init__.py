"""Test support: servers the tests start (the Dagster UI, an AWS emulator)."""
