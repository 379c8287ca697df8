"""cloob.trainer"""
