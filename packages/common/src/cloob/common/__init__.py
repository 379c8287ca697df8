"""cloob.common: what every cloob package needs and none should write twice."""
