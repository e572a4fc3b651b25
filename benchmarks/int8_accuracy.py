"""What int8 costs in accuracy: ImageNet top-1 of EfficientNet-Lite on the 100 sample photos with each runtime, and
the tuned head on CIFAR-10 codes of each runtime.

    python benchmarks/int8_accuracy.py [--cifar ../shared/data/cifar-10-python.tar.gz]

ImageNet: the network's own classifier on codes from PyTorch (fp32, bf16) and ONNX Runtime (fp32, int8). The int8
graph is calibrated two-fold: the photos with even index calibrate the graph that classifies the odd ones and the
other way round, so no photo is classified by a graph whose activation ranges it set. CIFAR-10: `run_experiment` on
the official archive with --runtime torch (bf16 where the CPU has it) and onnx-int8 (calibrated on 256 training
images), validation and test of the same tuned head.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cnncodes import get_backbone
from cnncodes.backbones import load_model
from cnncodes.backbone_checks import imagenet_sample
from cnncodes.codes.onnx_graphs import Session, codes_graph

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Photos:
    """Calibration batches from some of the photos (the interface codes_graph expects)."""

    def __init__(self, batch: torch.Tensor, tag: str):
        self.batch, self.identity = batch, tag

    def __call__(self):
        for start in range(0, len(self.batch), 25):
            yield self.batch[start:start + 25].numpy()


def imagenet_rows(name: str, cache: Path) -> dict:
    images, truth = imagenet_sample(DATA / "imagenet-sample")
    spec = get_backbone(name)
    windows = np.stack([spec.preprocess.window(i) for i in images])  # what the ONNX graphs take
    x = torch.from_numpy(spec.preprocess.network_input(windows))
    model = load_model(name)
    predicted = {}
    with torch.inference_mode():
        predicted["torch fp32"] = model.classify(model(x)).argmax(1).numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            codes = model(x.contiguous(memory_format=torch.channels_last)).float()
        predicted["torch bf16"] = model.classify(codes).argmax(1).numpy()
        onnx = Session(codes_graph(spec, "onnx", cache, None))
        predicted["onnx fp32"] = model.classify(torch.from_numpy(onnx(windows))).argmax(1).numpy()
        int8 = np.zeros(len(x), np.int64)
        for fold in (0, 1):
            calibrate, classify = np.arange(fold, len(x), 2), np.arange(1 - fold, len(x), 2)
            graph = Session(codes_graph(spec, "onnx-int8", cache, Photos(x[calibrate], f"photos-fold-{fold}")))
            int8[classify] = model.classify(torch.from_numpy(graph(windows[classify]))).argmax(1).numpy()
        predicted["onnx int8"] = int8
    return {k: (float((v == truth).mean()), int((v != predicted["torch fp32"]).sum())) for k, v in predicted.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cifar", default=None, help="the official CIFAR-10 archive: also compare the tuned head")
    p.add_argument("--runs", default="results/runs/int8")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
            print(f"\n{name}: ImageNet top-1 on 100 photos (top-1 changed against torch fp32)")
            for runtime, (top1, changed) in imagenet_rows(name, Path(cache)).items():
                print(f"  {runtime:<11} {top1:.2f}  ({changed} changed)")
    if args.cifar:
        from cnncodes.pipeline import run_experiment
        from cnncodes.settings import RunSettings

        print("\n| codes of `efficientnet_lite0` | validation | test |\n|---|---|---|")
        for runtime in ("torch", "onnx-int8"):
            r = run_experiment(RunSettings(data=args.cifar, runtime=runtime, head="tuned"), Path(args.runs) / runtime, report=False,
                               progress=False)
            print(f"| `--runtime {runtime}` | {r.metrics['validation_accuracy'] * 100:.2f}% | "
                  f"{r.metrics['accuracy'] * 100:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
