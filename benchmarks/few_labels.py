"""How far a few labels go: a simulated labeller answers with the true label of whatever training image is asked for.

    cnncodes extract --data ../shared/data/cifar-10-python.tar.gz --runtime onnx --out CODES
    python benchmarks/few_labels.py --codes CODES/codes.npz [--seeds 0,1,2] [--ablation] [--json results/few.json]

The collection is the official archive's 50,000 training images (their train and validation splits), unlabelled at
first; the labels of the train split are revealed only when the tool asks for them, the validation split's never
(its labels only choose between settings: the cold-start length), and the 10,000 test images measure accuracy.
After 10, 20, 50, 100, 200, 500 and 1,000 labels, test accuracy of:
  random + plain head     images drawn at random, the tuned head (`cnncodes run`'s) on the labelled codes alone
  tool + plain head       images chosen by labeling.choose_to_label, the same head
  tool + propagation      the same images, labels spread over the neighbour graph of all the collection's codes and
                          a logistic regression on every image (labeling.Propagation.classifier)
  chosen on validation     of the two above, the one with the higher validation accuracy (as `cnncodes run` decides
                          whether a collection's unlabelled images join the training rows)
Median and range over the seeds. Goals: >= 60% with 10 labels, >= 85% with 100, >= 89% with 1,000.
--ablation adds, for the tool's choice, the validation accuracy of the propagation's alternatives: plain unit-length
codes and C = 1, no class mass normalisation, and the same mass for every class. --long-tail 0.7: the same on a collection whose class k keeps 0.7**k of its images.
--whole-codes: several networks' codes compared as one vector, mid-level codes included (by default the graph and
the choice compare each network's final code, each normalised on its own: labeling.Propagation parts).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.backbones import final_code_columns  # noqa: E402
from cnncodes.codes.view import Codes  # noqa: E402
from cnncodes.heads import SoftmaxHead  # noqa: E402
from cnncodes.labeling import Propagation, choose_to_label  # noqa: E402

BUDGETS = (10, 20, 50, 100, 200, 500, 1000)
COLD_STARTS = (10, 1_000_000)  # labels per class before uncertainty (1,000,000: never, the default)


def plain_accuracy(x, y, labelled, x_eval, y_eval) -> float:
    if len(np.unique(y[labelled])) < 2:
        return float(np.mean(y_eval == np.bincount(y[labelled]).argmax()))
    head = SoftmaxHead("tuned", seed=0).fit(x[labelled], y[labelled], n_classes=10)
    return head.score(x_eval, y_eval)


def sequence(x, y, revealable, propagation, choose, seed: int, evaluations: dict, variants: dict | None = None):
    """Label in steps up to each budget; evaluations: {name: (codes, labels)} scored after each step; variants:
    {name: (Propagation, classifier options)} scored on validation only."""
    labels = np.full(len(x), -1)
    rows = []
    for budget in BUDGETS:
        t0 = time.perf_counter()
        asked = choose(labels, budget - int((labels >= 0).sum()), seed)
        assert revealable[asked].all(), "the tool asked for an image outside the labeller's split"
        labels[asked] = y[asked]
        choose_seconds = time.perf_counter() - t0
        labelled = np.flatnonzero(labels >= 0)
        row = {"labels": budget, "choose_seconds": round(choose_seconds, 2)}
        for name, (xe, ye) in evaluations.items():
            row[f"plain_{name}"] = plain_accuracy(x, y, labelled, xe, ye)
        if propagation is not None:
            model, _ = propagation.classifier(labels, 10, seed=seed)
            for name, (xe, ye) in evaluations.items():
                row[f"propagation_{name}"] = float((model.predict(xe) == ye).mean()) if model else 0.1
            # what `cnncodes run` does with unlabelled images: spread labels only where they score higher on validation
            spread = row["propagation_validation"] > row["plain_validation"]
            row["chosen_on_validation_test"] = row["propagation_test" if spread else "plain_test"]
            for name, (graph, options) in (variants or {}).items():
                model, _ = graph.classifier(labels, 10, seed=seed, **options)
                xe, ye = evaluations["validation"]
                row[f"propagation {name}_validation"] = float((model.predict(xe) == ye).mean()) if model else 0.1
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cold-starts", default=",".join(map(str, COLD_STARTS)),
                        help="labels per class before uncertainty, each a tool variant (1000000: never)")
    parser.add_argument("--ablation", action="store_true", help="also score the propagation's alternatives")
    parser.add_argument("--long-tail", type=float, default=None, metavar="RATIO",
                        help="class k of the collection keeps RATIO**k of its images (the test set stays whole)")
    parser.add_argument("--whole-codes", action="store_true", help="compare all columns of several networks' codes "
                        "as one vector (the graph and the choice), not each network's final code on its own")
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    codes = Codes.load(a.codes)
    x_all, y_all, s = np.asarray(codes.vectors, np.float32), codes.labels, codes.splits
    collection = np.flatnonzero(s != "test")  # train + validation: the unlabelled collection
    if a.long_tail:  # class k keeps ratio**k of its images (a seeded draw): a collection far from balanced
        draw = np.random.default_rng(0)
        collection = np.sort(np.concatenate([
            draw.choice(rows, int(len(rows) * a.long_tail ** k), replace=False)
            for k in range(len(codes.class_names)) for rows in [collection[y_all[collection] == k]]]))
        print("long-tailed collection, images per class:", np.bincount(y_all[collection]).tolist(), flush=True)
    x, y = x_all[collection], y_all[collection]
    revealable = s[collection] == "train"
    val = s[collection] == "validation"
    evaluations = {"validation": (x[val], y[val]), "test": (x_all[s == "test"], y_all[s == "test"])}
    t0 = time.perf_counter()
    propagation = Propagation(x, parts=None if a.whole_codes else final_code_columns(codes.backbone))
    print(f"neighbour graph of {len(x):,} codes: {time.perf_counter() - t0:.1f} s", flush=True)
    variants = {}
    if a.ablation:
        variants = {"unit codes, C=1": (Propagation(x, power=False), {"c": 1.0}),
                    "no class mass normalisation": (propagation, {"prior": "none"}),
                    "same mass per class": (propagation, {"prior": "equal"})}
    results = {"codes": codes.backbone, "runs": {}}
    for seed in map(int, a.seeds.split(",")):
        rng = np.random.default_rng(seed)
        train_rows = np.flatnonzero(revealable)

        def random_choice(labels, n, _seed):
            return rng.choice(np.setdiff1d(train_rows, np.flatnonzero(labels >= 0)), n, replace=False)

        results["runs"][f"random/{seed}"] = sequence(x, y, revealable, None, random_choice, seed, evaluations)
        for cold in map(int, a.cold_starts.split(",")):
            def tool_choice(labels, n, s_, _cold=cold):  # the validation images are not offered to the labeller
                return choose_to_label(x, labels, n, seed=s_, propagation=propagation, offer=revealable,
                                       cold_start=_cold)

            results["runs"][f"tool cold={cold}/{seed}"] = sequence(
                x, y, revealable, propagation, tool_choice, seed, evaluations,
                variants if cold == COLD_STARTS[-1] else None)
    summary = {}
    for name in sorted({k.split("/")[0] for k in results["runs"]}):
        runs = [v for k, v in results["runs"].items() if k.split("/")[0] == name]
        for key in [k for k in runs[0][0] if k.startswith(("plain_", "propagation", "chosen_"))]:
            summary[f"{name} | {key}"] = {r["labels"]: [float(np.median([run[i][key] for run in runs])),
                                                      min(run[i][key] for run in runs), max(run[i][key] for run in runs)]
                                         for i, r in enumerate(runs[0])}
    results["summary"] = summary
    print("\n| strategy | " + " | ".join(str(b) for b in BUDGETS) + " |\n|---|" + "---|" * len(BUDGETS))
    for key, by_budget in summary.items():
        print(f"| {key} | " + " | ".join(f"{v[0] * 100:.1f} ({v[1] * 100:.1f}-{v[2] * 100:.1f})"
                                          for v in by_budget.values()) + " |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
