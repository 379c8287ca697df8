"""CLIP's zero-shot classification: the protocol (`protocol`) and `benchmarks zeroshot` (`run`)."""
