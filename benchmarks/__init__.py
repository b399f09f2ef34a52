"""Benchmarks of the confidence handler against no instrumentation and its peers: `make bench`, see RESULTS.md."""
