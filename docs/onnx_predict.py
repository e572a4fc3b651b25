import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1])
recipe = json.loads(session.get_modelmeta().custom_metadata_map["cnncodes"])
size, crop, small_crop = (recipe["preprocess"][k] for k in ("size", "crop", "small_crop"))


def pixels(path):
    """The photo as the model's input: (1, size, size, 3) uint8, decoded, resized and cropped as cnncodes does."""
    img = Image.open(path)
    if img.format == "JPEG":  # decode big photos at reduced size, never below what the crop keeps
        img.draft("RGB", (int(size / crop) if crop else size,) * 2)
    img = ImageOps.exif_transpose(img)  # as the camera held it
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))  # on white
    img = img.convert("RGB")
    keep = crop if min(img.size) >= size else small_crop  # share of the shorter side kept; None: squash
    short = int(size / keep) if keep else size
    scale = short / min(img.size)
    if not keep:
        w, h = size, size
    elif img.height <= img.width:
        w, h = max(size, int(img.width * scale)), short
    else:
        w, h = short, max(size, int(img.height * scale))
    left, top = round((w - size) / 2), round((h - size) / 2)
    return np.asarray(img.resize((w, h), Image.BICUBIC).crop((left, top, left + size, top + size)))[None]


for path in sys.argv[2:]:
    try:
        outputs = session.run(None, {"pixels": pixels(path)})
    except OSError as exc:  # not an image, truncated, unreadable
        print(path, "error", exc, file=sys.stderr)
        continue
    p, unknown = outputs[0][0], recipe.get("unknown")  # unknown: the threshold of the unknown score (outputs[1])
    nearest = f"{recipe['class_names'][p.argmax()]} {p.max():.3f}"  # the top class and its probability
    if unknown and outputs[1][0] > unknown["threshold"]:
        print(path, "unknown", f"score {outputs[1][0]:.3f} > {unknown['threshold']:.3f}; nearest", nearest)
    else:
        print(path, nearest)
