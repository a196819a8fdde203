"""Building blocks of the benchmarks: measurement, and models at real size with random weights."""
