"""CNN codes: the content-addressed store, the extraction identity, extraction and its engines and runtimes."""
from .view import Codes

__all__ = ["Codes"]
