"""cnncodes: transfer learning on images with frozen CNN codes and a softmax head."""
from .backbones import BACKBONES, DEFAULT_BACKBONE, get_backbone
from .codes import Codes
from .datasets import Dataset, from_arrays, image_folder, load_dataset
from .errors import CnnCodesError
from .extract import extract_codes

__version__ = "0.1.0"
__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Codes", "CnnCodesError", "Dataset", "extract_codes", "from_arrays",
           "get_backbone", "image_folder", "load_dataset"]
