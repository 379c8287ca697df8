"""Turning records into files people read: results JSON/CSV/Markdown, plots, the paper's
numbers, clip_benchmark exports."""
