"""The Dagster instance: process environment, storage."""
