"""Benchmarks: run as modules (`make bench`), never collected by pytest."""
