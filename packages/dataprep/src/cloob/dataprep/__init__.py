"""cloob.dataprep"""
