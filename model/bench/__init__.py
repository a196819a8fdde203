"""Benchmarks run by `omnidesk bench NAME`: each module NAME has main(argv) -> exit code."""
