"""From unlabelled photos to labels: which images to label next, and labels spread over the codes' neighbours."""
from .choose import choose_to_label
from .propagate import Propagation

__all__ = ["choose_to_label", "Propagation"]
