"""Applications on top of the library: predict, viewers, the benchmark, the demo."""
