"""Turning records into files people read: results JSON/CSV/Markdown, plots, paper numbers, exports."""
