"""Tools built on the library: the benchmark and the reproduction study."""
