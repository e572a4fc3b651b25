"""Extraction engines besides the local one in extract.py: each fills the same codes store."""
