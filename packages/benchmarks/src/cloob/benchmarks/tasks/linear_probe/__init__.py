"""Linear probes on frozen image features: the probe (`protocol`) and `benchmarks linear-probe`
(`run`)."""
