"""Command line: a thin shell over the Python API (see README for the same steps in Python)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import CnnCodesError


class _Parser(argparse.ArgumentParser):
    """Bad flags get one line (what is wrong and where help is), not the whole usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of blocks, got {text!r}")
    return int(text)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"must be in [0, 100), got {value}")
    return value


def _data_options(p, splits: bool = True):
    """splits=False: the splits come from the model file (evaluate), only where the data lives may change."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="a folder of class folders (or train/ with val/ and/or test/ "
                   "holding class folders; unlabeled/ for images without a label), a labels.csv manifest "
                   "(path,label[,split]), or the CIFAR-10 archive; default: CIFAR-10, downloaded into the cache if "
                   "absent. For a finished run's commands: where its images are now (overrides the recorded path)")
    g.add_argument("--cache-dir", default=None, help="where codes and downloads live (default $CNNCODES_CACHE or "
                   "~/.cache/cnncodes)")
    if not splits:
        return
    g.add_argument("--test-percent", type=_percent, default=20.0, help="test share for a single tree (default 20)")
    g.add_argument("--validation-percent", type=_percent, default=20.0, help="validation share of the training "
                   "images, used to choose the head's settings (default 20)")
    g.add_argument("--seed", type=int, default=0, help="seed of the validation split and of SGD (default 0)")


def _extract_options(p, backbone=True):
    from .codes.runtime import RUNTIMES

    g = p.add_argument_group("extraction")
    if backbone:
        g.add_argument("--backbone", default=None, help="network, or several joined by + (see `cnncodes backbones`; "
                       "default efficientnet_lite0)")
        g.add_argument("--flip", action="store_true", help="also use horizontally flipped codes (train on both, "
                       "average at prediction)")
    g.add_argument("--batch-size", type=_positive_int, default=64,
                   help="images per forward pass (default 64; ONNX Runtime takes them 4 at a time)")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="decoding threads; with --runtime onnx*, workers that each decode and run their batches "
                        "(default: cores, at least 2)")
    g.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda[:N]")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 where the hardware has it (codes within 0.3 points of fp32)")
    g.add_argument("--runtime", default=None, choices=["auto", *RUNTIMES], help="what "
                   "computes the codes: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (quantised, calibrated on "
                   "training images); auto: onnx-int8 on a CPU with VNNI (unless --precision is given), torch on a GPU or "
                   "a CPU with bf16, else onnx (1.9x torch there). Default: auto, or for a saved model the runtime of "
                   "its codes; see docs/benchmarks.md, Speed")
    g.add_argument("--engine", default="local", choices=["local", "ray"], help="local threads or a Ray cluster")
    g.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    g.add_argument("--concurrency", type=_positive_int, default=None, help="Ray actors (default: one per 2 CPUs)")


def _head_options(p):
    g = p.add_argument_group("head")
    g.add_argument("--preset", default=None, choices=["fast", "best", "original"], help="fast: Lite0 codes, "
                   "tuned head; best: the configuration chosen on validation (README); original: Inception-2015 "
                   "codes with the original SGD protocol. Explicit --backbone/--head/--flip override it")
    g.add_argument("--head", default=None, choices=["tuned", "sgd", "mlp"], help="tuned: L-BFGS with L2 chosen "
                   "on validation; sgd: the original protocol (lr 0.01, batches of 10, one epoch); mlp: one hidden "
                   "layer, early stopping on validation. Default: tuned, or --finetune 1 where it pays (below)")
    g.add_argument("--finetune", type=_whole, default=None, metavar="K", help="train the last K blocks and the "
                   "head convolution of an EfficientNet-Lite on its cached activations (K=0: the head convolution "
                   "only); slower than a probe, see docs/benchmarks.md")
    g.add_argument("--epochs", type=_positive_int, default=None, help="--finetune: the length of its one-cycle "
                   "schedule, at most N epochs (it stops early when 2 bring no better validation accuracy). Default 4: "
                   "94.3%% validation accuracy on CIFAR-10 (3: 94.3%%, 2: 93.8%%), 136 s of training on 2 Xeon "
                   "cores with AMX (int8 activations; docs/benchmarks.md)")
    g.add_argument("--normalize", default="none", choices=["none", "sqrt", "l2"],
                   help="transform codes before standardisation (default none)")
    g.add_argument("--class-weight", default="none", choices=["none", "balanced"], help="balanced: every class "
                   "weighs the same in the loss (imbalanced data); default none")
    g.add_argument("--eval-every", type=_positive_int, default=100, help="sgd: learning-curve point every N steps")
    g.add_argument("--no-unknown", dest="detect_unknown", action="store_false", help="do not learn when an image "
                   "shows none of the classes (by default predictions say 'unknown' for such images; 95%% of "
                   "known validation images are kept)")


RUN_DEFAULT = ("The default decides per machine and collection. Codes: EfficientNet-Lite0 at 224 px, computed by "
               "ONNX Runtime's int8 kernels where the CPU has VNNI (--runtime auto). Head: for at least 10,000 "
               "labelled images, where the CPU trains in bf16 fast enough for a first run of CIFAR-10 to fit 5 "
               "minutes (a second of training steps measures it), Lite0's last block fine-tuned on its cached "
               "activations (94.2% validation accuracy on CIFAR-10; 4.3 minutes on 2 AMD EPYC cores, 4.6 on 2 Xeon "
               "cores with AMX), else the tuned softmax (91.2%; 4.8 minutes on 2 older AMD EPYC cores, where "
               "fine-tuning took 7.7; 10.8 on 2 cores without VNNI or bf16). Quicker: --backbone "
               "efficientnet_lite0:size=128 (4.8 minutes without VNNI, 87.2%). Best and slowest: --preset best "
               "(94.8%; four networks' codes). docs/benchmarks.md has the commands.")


def _progress(a) -> bool:
    """Progress bars only on a terminal: in a log file their carriage returns pile up."""
    return not a.quiet and sys.stderr.isatty()


def _extract_kwargs(a) -> dict:
    return dict(batch_size=a.batch_size, threads=a.threads, device=a.device, precision=a.precision,
                runtime=a.runtime, engine=a.engine, address=a.address, concurrency=a.concurrency)


def _data_kwargs(a) -> dict:
    return dict(cache_dir=a.cache_dir, test_percent=a.test_percent, validation_percent=a.validation_percent,
                seed=a.seed)


def _settings(a):
    """The run's one settings object, from the flags (a preset fills what the flags leave open)."""
    from .presets import resolve
    from .settings import RunSettings

    chosen = resolve(a.preset, a.backbone, a.head, a.flip, a.finetune)
    return RunSettings(data=a.data, backbone=chosen["backbone"], head=chosen["head"], flip=chosen["flip"],
                       normalize=a.normalize, class_weight=a.class_weight, eval_every=a.eval_every,
                       finetune_epochs=a.epochs,
                       detect_unknown=a.detect_unknown, **_data_kwargs(a),
                       **{**_extract_kwargs(a), "runtime": a.runtime or "auto"})


def cmd_backbones(a):
    from .backbones import BACKBONES, DEFAULT_BACKBONE

    def crop(fraction):
        return "squash" if fraction is None else f"crop {fraction:.3f}"

    print(f"{'name':<20} {'input':>7} {'dim':>5}  {'weights (pip package)':<40} {'preprocessing':<62} note")
    for b in BACKBONES.values():
        mark = " (default)" if b.name == DEFAULT_BACKBONE else ""
        pre = b.preprocess
        recipe = (f"{pre.resize}, photos {crop(pre.crop)}, small images {crop(pre.small_crop)}, "
                  f"(x-{pre.mean:g})/{pre.std:g}")
        print(f"{b.name:<20} {pre.size:>5}px {b.feature_dim:>5}  {b.weights_source:<40} {recipe:<62} {b.note}{mark}")


def _run_or_train(a, evaluate_test: bool):
    from .outputs.metrics import format_table, split_lines
    from .pipeline import run_experiment

    result = run_experiment(_settings(a), a.out, report=evaluate_test and not a.no_report, evaluate_test=evaluate_test,
                            progress=_progress(a))
    codes = result.codes
    print("\n".join(split_lines(codes.splits, codes.labels, codes.class_names, scored=evaluate_test)))
    skipped = result.codes.skipped
    if skipped:
        print(f"skipped {len(skipped)} unusable file{'s' * (len(skipped) != 1)} (all listed with reasons in "
              f"{result.out / 'skipped.tsv'}):")
        print("\n".join(f"  {item}: {why}" for item, why in skipped[:5]) + ("\n  ..." if len(skipped) > 5 else ""))
    spread = result.unlabelled
    if spread is not None:
        print(f"{spread['images']:,} unlabelled image{'s' * (spread['images'] != 1)}: accuracy "
              f"{100 * spread['accuracy_with']:.1f}% with their labels spread over the codes' neighbours, "
              f"{100 * spread['accuracy_without']:.1f}% without ({spread['chosen_on']}): "
              f"{'used' if spread['used'] else 'not used'}")
    if result.head_choice:
        print(f"head: {result.head_choice}")
    if result.settings.head == "finetune":
        validation_images = int((result.codes.splits == "validation").sum())
        print(fine_tuning_line(result.head.curve_, result.head.epochs, validation_images))
    if evaluate_test:
        print(format_table(result.metrics))
        print(f"the head's settings were chosen on: {result.metrics['chosen_on']}")
        if result.settings.head == "finetune" and result.settings.detect_unknown and result.metrics["unknown"] is None:
            from .heads.unknown import UNSEEN_CALIBRATION

            print(f"no 'unknown' (none of these) answers: a fine-tuned head's detector is calibrated on the validation "
                  f"split, and this one holds {result.metrics['split_sizes']['validation']} images (it needs "
                  f"{UNSEEN_CALIBRATION}; the tuned head, without --finetune, cross-validates instead)")
        if (result.out / "report.html").exists():
            print(f"report: {result.out / 'report.html'}")
    print(f"model: {result.out / 'model.npz'}")


def fine_tuning_line(curve: list[dict], epochs: int, validation_images: int) -> str:
    """Which epoch a fine-tuned head kept: early stopping may end the schedule, and keep the linear probe (epoch 0);
    on a small validation split that choice is noisy (the tuned head cross-validates there instead)."""
    from .heads.softmax import SMALL_VALIDATION

    if not curve:
        return f"fine-tuning: {epochs} epochs, no validation split to choose an epoch on: the last one kept"
    best = max(curve, key=lambda row: row["validation_accuracy"])
    kept = "the linear probe before fine-tuning (epoch 0)" if best["epoch"] == 0 else f"epoch {best['epoch']}"
    noisy = "" if validation_images >= SMALL_VALIDATION else (
        f" (chosen on {validation_images} validation images, a noisy choice: below {SMALL_VALIDATION} the tuned head, "
        "without --finetune, chooses by cross-validation)")
    return (f"fine-tuning: {len(curve) - 1} of {epochs} epochs run, kept {kept}: validation accuracy "
            f"{best['validation_accuracy'] * 100:.2f}%{noisy}")


def cmd_run(a):
    _run_or_train(a, evaluate_test=True)


def cmd_train(a):
    _run_or_train(a, evaluate_test=False)


def cmd_extract(a):
    from .backbones import DEFAULT_BACKBONE
    from .data.datasets import load_dataset
    from .codes.extract import extract_codes

    dataset = load_dataset(a.data, **_data_kwargs(a))
    codes = extract_codes(dataset, a.backbone or DEFAULT_BACKBONE, flip=a.flip, cache_dir=a.cache_dir,
                          progress=_progress(a), **{**_extract_kwargs(a), "runtime": a.runtime or "auto"})
    out = Path(a.out)
    codes.save(out / "codes.npz")
    if codes.skipped:
        print(f"skipped {len(codes.skipped)} unusable files:")
        for i, why in codes.skipped[:20]:
            print(f"  {i}: {why}")
    print(f"{codes.vectors.shape[0]} codes of dimension {codes.vectors.shape[1]} -> {out / 'codes.npz'} "
          f"(load with numpy.load)")


def cmd_evaluate(a):
    from .outputs.metrics import format_table
    from .pipeline import evaluate_model

    metrics = evaluate_model(a.model, a.data, a.out, progress=_progress(a), cache_dir=a.cache_dir, **_extract_kwargs(a))
    print(format_table(metrics))


def cmd_predict(a):
    from .predict import Predictor, list_images, predict_stream, write_predictions_file

    _check_model(a.model, "the model comes first (`cnncodes predict RUN_DIR IMAGES...`)")
    if a.format and not a.out:
        raise CnnCodesError(f"--format {a.format} is the format of --out FILE: give --out predictions.{a.format} too "
                            "(without --out, predict prints a line per image)")
    missing = [p for p in a.images if not os.path.exists(p)]
    if missing:
        raise CnnCodesError(f"no such file or folder: {', '.join(missing)}")
    images = list_images(a.images)
    if not images:
        raise CnnCodesError(f"no image files in {', '.join(a.images)}")
    predictor = Predictor(a.model, a.device, a.precision, unknown=a.unknown)
    if a.explain:
        from .explain import Explainer, write_explanations

        explainer = Explainer.of(predictor)
        results = list(predict_stream(predictor, images, a.top_k))  # printed below too, unless --out
        written = write_explanations(explainer, images, predictor.class_names, a.explain,
                                     [None if isinstance(r, str) else r.top[0][0] for r in results],
                                     [not isinstance(r, str) and bool(r.unknown) for r in results])
        made = sum(not isinstance(w, str) for w in written)
        print(f"{made} heatmaps -> {a.explain} (which is whose: heatmaps.csv there)"
              + (f" ({len(written) - made} images skipped)" if made < len(written) else ""))
    if a.out:
        done, skipped = write_predictions_file(predictor, images, Path(a.out), a.format or "csv", a.top_k,
                                               progress=_progress(a))
        print(f"{done} images predicted, {skipped} skipped (reasons in the error column) -> {a.out}")
        if not done:
            raise CnnCodesError("no image could be read")
        return
    failed = 0
    for path, res in zip(images, results if a.explain else predict_stream(predictor, images, a.top_k)):
        if isinstance(res, str):
            failed += 1
            print(f"{path}: skipped ({res})")
        else:
            print(f"{path}: {res}", flush=True)
    if failed == len(images):
        raise CnnCodesError("no image could be read")


def cmd_export(a):
    from .export import export_model

    path = export_model(a.model, a.out, int8=a.int8, cache_dir=a.cache_dir, data=a.data, unknown=a.unknown)
    from .export import OnnxModel
    from .heads.model_file import load_model_file, model_file_of

    if not a.int8 and load_model_file(model_file_of(a.model))[1]["settings"].get("runtime") == "onnx-int8":
        print("note: the run computed its codes with the int8 network and the exported file holds the float one, so "
              "its answers differ slightly from the run's; --int8 exports the network the run used")

    gives = "class probabilities and the unknown score" if OnnxModel(path).threshold is not None else \
        "class probabilities (no unknown detector" + ("" if not a.unknown or not a.int8 else ": the run's detector "
                                                      "knows its own codes, not int8 ones; a run with --runtime "
                                                      "onnx-int8 exports one") + ")"
    print(f"{'int8 ' if a.int8 else ''}ONNX model: {path} ({path.stat().st_size / 1e6:.1f} MB); "
          f"run it with `cnncodes predict {path} IMAGES` or ONNX Runtime alone (docs/onnx_predict.py). It gives "
          f"{gives}; heatmaps need the run folder")


def cmd_audit(a):
    from .pipeline import audit_run

    settings = None
    if a.run_dir is None:
        if a.data is None or a.out is None:
            raise CnnCodesError("audit needs RUN_DIR, or --data (and --backbone) with --out")
        settings = _settings(a)
    page, result = audit_run(a.run_dir, a.out, settings=settings, threshold=a.threshold, folds=a.folds,
                             progress=_progress(a), data=a.data)
    print(f"{len(result.label_issues):,} likely label errors, {len(result.pairs):,} near-duplicate pairs "
          f"({len(result.leaks):,} train/test), {len(result.outliers):,} outliers -> {page}")
    if weak := result.weak_suggestions():
        print(f"note: weak label suggestions: {weak}")
    if unchecked := result.unchecked():
        print(f"note: {unchecked}")


def cmd_similar(a):
    from .predict import list_images
    from .audit.similar import SELF_EXCLUDED, write_similar_page
    from .pipeline import similar_images

    images = list_images(a.images)
    if not images:
        raise CnnCodesError(f"no image files in {', '.join(a.images)}")
    found, codes, dataset = similar_images(a.source, images, a.k, data=a.data)
    for path, result in zip(images, found):
        if isinstance(result, str):
            print(f"{path}: skipped ({result})")
        else:
            print(f"{path}: " + ", ".join(f"{codes.ids[row]} {sim:.3f}" for row, sim in result))
    if all(isinstance(r, str) for r in found):
        raise CnnCodesError("no query image could be read")
    print(f"({SELF_EXCLUDED})\npage: {write_similar_page(images, found, codes, dataset, a.out)}")


def cmd_report(a):
    from .outputs.report import write_report

    path = write_report(Path(a.run_dir), progress=_progress(a))
    print(f"report: {path}")


def cmd_tsne(a):
    from .codes.view import Codes
    from .outputs.tsne import tsne_map

    codes = Codes.load(a.codes)
    path = tsne_map(codes, Path(a.out), split=a.split, sample=a.sample, seed=a.seed)
    print(f"t-SNE map: {path}")


def _check_model(model: str, hint: str) -> None:
    """A model argument that is not there, or a folder that is not a run folder, named as such."""
    if not os.path.exists(model):
        raise CnnCodesError(f"model {model!r} does not exist (a run folder, its model.npz, or a model.onnx)")
    if os.path.isdir(model) and not os.path.exists(os.path.join(model, "model.npz")):
        raise CnnCodesError(f"{model} is a folder without model.npz, not a run folder: {hint}")


def cmd_serve(a):
    from .serve import serve

    _check_model(a.model, "give the folder `cnncodes run --out` wrote")
    serve(a.model, a.host, a.port, a.token, a.max_body_mb, a.max_files)


def cmd_label(a):
    from .labeling.server import label

    label(a.folder, a.host, a.port, backbone=a.backbone, cache_dir=a.cache_dir, progress=_progress(a))


def cmd_cache(a):
    from .codes.cache import cache_entries, prune
    from .codes.extract import default_cache_dir

    cache = Path(a.cache_dir or default_cache_dir())
    if a.action == "list":
        entries = cache_entries(cache)
        print(f"{cache}: {sum(e.bytes for e in entries) / 2**20:,.1f} MiB")
        for e in entries:
            images = f"{e.images:,} images" if e.images is not None else ""
            print(f"  {e.kind:<31} {e.bytes / 2**20:9.1f} MiB  {images:>15}  used {e.age_days:6.1f} days ago  "
                  f"{e.what}  ({e.path.name})")
        return
    doomed = prune(cache, a.older_than, dry_run=not a.yes)
    verb = "removed" if a.yes else "would remove"
    for e in doomed:
        print(f"  {verb}: {e.kind} {e.path.name} ({e.bytes / 2**20:,.1f} MiB, used {e.age_days:.1f} days ago)")
    print(f"{verb} {len(doomed)} entries, {sum(e.bytes for e in doomed) / 2**20:,.1f} MiB"
          + ("" if a.yes else "; run `cnncodes cache prune --yes` to remove them"))


def build_parser() -> argparse.ArgumentParser:
    from .presets import FEW_LABELS_BACKBONE

    p = _Parser(prog="cnncodes", description="Transfer learning on images with pretrained CNN codes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help_text, epilog=None):
        sp = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog)
        sp.set_defaults(func=func)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sp

    sp = add("run", cmd_run, "the whole experiment: codes, head, test metrics, report", epilog=RUN_DEFAULT)
    _data_options(sp); _extract_options(sp); _head_options(sp)
    sp.add_argument("--out", default="runs/latest", help="run directory (default runs/latest)")
    sp.add_argument("--no-report", action="store_true", help="skip pictures and report.html")

    sp = add("extract", cmd_extract, "compute (or reuse) codes and write OUT/codes.npz")
    _data_options(sp); _extract_options(sp)
    sp.add_argument("--out", required=True, help="folder for codes.npz")

    sp = add("train", cmd_train, "train the head on train (+validation) codes; the test split is not touched")
    _data_options(sp); _extract_options(sp); _head_options(sp)
    sp.add_argument("--out", default="runs/latest", help="run directory for model.npz")
    sp.set_defaults(no_report=True)

    sp = add("evaluate", cmd_evaluate, "test metrics of a saved model")
    sp.add_argument("model", help="a run folder or its model.npz (from run or train)")
    _data_options(sp, splits=False); _extract_options(sp, backbone=False)
    sp.add_argument("--out", default=None, help="folder for metrics.json (default: print only)")

    sp = add("predict", cmd_predict, "top classes of new images")
    sp.add_argument("model", help="a run folder (or its model.npz), or a model.onnx from export")
    sp.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    sp.add_argument("--top-k", type=_positive_int, default=3)
    sp.add_argument("--out", default=None, help="write the predictions to this file (streamed, any number of "
                    "images) instead of printing them")
    sp.add_argument("--format", default=None, choices=["csv", "json"], help="format of --out (default csv)")
    sp.add_argument("--no-unknown", dest="unknown", action="store_false", help="always name one of the known "
                    "classes (by default an image unlike the training images is called unknown: none of these)")
    sp.add_argument("--explain", metavar="DIR", default=None, help="also write a heatmap over each image into DIR: "
                    "where the network saw evidence for its top class (class activation map; EfficientNet-Lite with "
                    "the tuned or sgd head, or fine-tuned)")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])

    sp = add("audit", cmd_audit, "likely label errors, near-duplicates and train/test leaks, outliers: "
             "audit.html and ranked CSV files")
    sp.add_argument("run_dir", nargs="?", default=None, help="a finished run (its data, codes and test predictions); "
                    "or give --data, --backbone and --out")
    _data_options(sp); _extract_options(sp)
    sp.add_argument("--out", default=None, help="folder for the audit (default RUN_DIR/audit)")
    sp.add_argument("--threshold", type=float, default=None, help="cosine similarity of centred codes from which "
                    "two images are near-duplicates (default 0.85)")
    sp.add_argument("--folds", type=_positive_int, default=5, help="folds of the out-of-fold probabilities")
    sp.set_defaults(preset=None, head=None, finetune=None, epochs=None, normalize="none", class_weight="none",
                    eval_every=100,
                    detect_unknown=True)

    sp = add("similar", cmd_similar, "the images of a collection most like some query images (exact search over "
             "the codes), with an HTML page")
    sp.add_argument("source", help="a run folder (its data and codes) or a codes.npz from `cnncodes extract`")
    sp.add_argument("images", nargs="+", help="query image files or folders")
    sp.add_argument("--k", type=_positive_int, default=12, help="neighbours per query (default 12)")
    sp.add_argument("--out", default="similar.html", help="the page to write (default similar.html)")
    sp.add_argument("--data", default=None, help="where the run's images are now (default: the recorded path)")

    sp = add("export", cmd_export, "one ONNX file (uint8 pixels in; class probabilities and the unknown score out) "
             "for ONNX Runtime")
    sp.add_argument("model", help="RUN_DIR or its model.npz")
    sp.add_argument("--out", required=True, help="the .onnx file to write")
    sp.add_argument("--int8", action="store_true", help="quantise the backbone to int8, calibrated on the run's "
                    "training images (its --data must be readable here)")
    sp.add_argument("--cache-dir", default=None, help="where the backbone graphs are cached (default: the run's)")
    sp.add_argument("--data", default=None, help="--int8 of a run computed without int8: where the run's images are "
                    "now (default: the recorded path)")
    sp.add_argument("--no-unknown", dest="unknown", action="store_false", help="leave the 'none of these' detector "
                    "out (its reference codes, float16, are most of the file's size beyond the network)")

    sp = add("serve", cmd_serve, "the model behind HTTP: POST images to /predict, a page to drop images on at /, the "
             "OpenAPI description at /docs")
    sp.add_argument("model", help="a run folder, its model.npz, or a model.onnx from export")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; any "
                    "other address needs --token)")
    sp.add_argument("--port", type=_port, default=8000)
    sp.add_argument("--token", default=None, help="a secret that clients send as 'Authorization: Bearer TOKEN' to "
                    "/predict; required when --host is not a loopback address")
    sp.add_argument("--max-body-mb", type=float, default=50.0, help="largest request body (default 50 MB)")
    sp.add_argument("--max-files", type=_positive_int, default=64,
                    help="most files in one request, other form fields counted too (default 64)")

    sp = add("label", cmd_label, "a page for labelling a folder of photos with the keyboard, the images worth a label "
             "first; answers go to FOLDER/labels.csv at once (then: cnncodes run --data FOLDER/labels.csv)")
    sp.add_argument("folder", help="a folder of images (any tree); its labels.csv is read and kept up to date")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind: this machine only (127.0.0.1, ::1)")
    sp.add_argument("--port", type=_port, default=8000)
    sp.add_argument("--backbone", default=None, help="network for the codes (default efficientnet_lite0). "
                    f"{FEW_LABELS_BACKBONE} chooses better first images and spreads their labels further (on CIFAR-10, "
                    "10 labels gave 86%% test accuracy against 76%% with Lite0's codes) for about five times the "
                    "codes' time (docs/benchmarks.md, \"Few labels\")")
    sp.add_argument("--cache-dir", default=None, help="default $CNNCODES_CACHE or ~/.cache/cnncodes")

    sp = add("cache", cmd_cache, "what the cache holds (codes stores, graphs); `cache prune` removes what no run "
             "used lately")
    sp.add_argument("action", nargs="?", default="list", choices=["list", "prune"])
    sp.add_argument("--cache-dir", default=None, help="default $CNNCODES_CACHE or ~/.cache/cnncodes")
    sp.add_argument("--older-than", type=float, default=30.0, metavar="DAYS", help="prune: stores unused for this many "
                    "days (default 30), and stores of older formats")
    sp.add_argument("--yes", action="store_true", help="prune: remove them (without it, only list what would go)")

    add("backbones", cmd_backbones, "list the registered networks")

    sp = add("report", cmd_report, "rebuild report.html of a finished run")
    sp.add_argument("run_dir")

    sp = add("tsne", cmd_tsne, "t-SNE map of codes (from `cnncodes extract`)")
    sp.add_argument("codes", help="codes.npz")
    sp.add_argument("--out", required=True, help="folder for the map")
    sp.add_argument("--split", default="test", help="split to embed: train, validation, test or all")
    sp.add_argument("--sample", type=_positive_int, default=10000, help="at most this many points (default 10000)")
    sp.add_argument("--seed", type=int, default=0)
    return p


COLLECTION_COMMANDS = ("run", "extract", "train", "evaluate", "audit")  # their --data is the collection's images


def main(argv=None) -> int:
    parser = build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra:
        collection = a.command in COLLECTION_COMMANDS and getattr(a, "data", None) is None and any(
            word and not word.startswith("-") and os.path.exists(word) for word in extra)
        parser.error(f"unrecognized arguments: {' '.join(extra)}" + (
            f"; cnncodes {a.command} takes its images as --data PATH" if collection else ""))
    if a.command is None:
        parser.print_help()
        return 2
    if argv is None and a.command in ("run", "extract", "train", "evaluate", "predict", "audit", "similar", "serve",
                                            "label"):
        from .codes.runtime import reexec_with_fast_malloc

        reexec_with_fast_malloc()
    try:
        a.func(a)
    except CnnCodesError as exc:
        if a.debug:
            raise
        print(f"cnncodes: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("cnncodes: interrupted; the codes computed so far are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, traceback only with --debug
        if a.debug:
            raise
        print(f"cnncodes: unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
