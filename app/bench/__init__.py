"""Benchmarks of the desktop program itself (`omnidesk bench NAME` finds them beside model/bench/)."""
