"""cloob.benchmarks"""
