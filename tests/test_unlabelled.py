"""A run learning from unlabelled images: spread labels are used where they score higher, and only there."""
import numpy as np

from cnncodes.labeling.unlabelled import choose_spread


def chains(unlabelled_noise: bool, validation: int = 2, seed: int = 0):
    """3 classes, each a long thin chain of codes, the chains close together: a few labels place a linear boundary
    badly; the chains (followed by the neighbour graph) say where it belongs. Returns codes, labels (-1 for the
    unlabelled), splits and the unlabelled images' true classes."""
    rng = np.random.default_rng(seed)
    d = 32
    centres, directions = rng.normal(0, 0.3, (3, d)) + 5, rng.normal(0, 1, (3, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    xs, labels, splits, truth = [], [], [], []
    for k in range(3):
        for split, n in (("train", 4), ("validation", validation), ("unlabeled", 200)):
            x = centres[k] + rng.uniform(-6, 6, n)[:, None] * directions[k] + rng.normal(0, 0.3, (n, d))
            if unlabelled_noise and split == "unlabeled":
                x = rng.normal(5, 4, (n, d))  # images of nothing the classes show
            xs.append(x)
            labels.append(np.full(n, -1 if split == "unlabeled" else k))
            splits += [split] * n
            truth += [k] * n if split == "unlabeled" else []
    return np.vstack(xs).astype(np.float32), np.concatenate(labels), np.array(splits), np.array(truth)


def test_spread_labels_are_used_where_they_help_and_are_right():
    x, labels, splits, truth = chains(unlabelled_noise=False)
    choice = choose_spread(x, labels, splits, 3, c=0.01)
    assert choice.used and choice.accuracy_with >= choice.accuracy_without + 0.2
    assert "cross-validation" in choice.chosen_on and choice.as_dict()["rows_used"] == 600
    unlabelled = np.flatnonzero(splits == "unlabeled")
    assert np.mean(choice.labels == truth[np.searchsorted(unlabelled, choice.rows)]) > 0.9


def test_unlabelled_images_of_nothing_known_are_left_out():
    x, labels, splits, _ = chains(unlabelled_noise=True)
    choice = choose_spread(x, labels, splits, 3, c=0.01)
    assert not choice.used and choice.rows is None and choice.accuracy_with < choice.accuracy_without


def test_a_large_validation_split_decides_and_no_unlabelled_image_means_no_decision():
    x, labels, splits, _ = chains(unlabelled_noise=False, validation=40)
    choice = choose_spread(x, labels, splits, 3, c=0.01)
    assert choice.chosen_on == "validation split" and choice.used
    labelled = splits != "unlabeled"
    assert choose_spread(x[labelled], labels[labelled], splits[labelled], 3, c=0.01) is None


def test_one_label_per_class_is_too_few_to_compare():
    x, labels, splits, _ = chains(unlabelled_noise=False)
    first = [int(np.flatnonzero((labels == k) & (splits == "train"))[0]) for k in range(3)]
    keep = np.sort(np.concatenate([first, np.flatnonzero(splits == "unlabeled")]))
    assert choose_spread(x[keep], labels[keep], splits[keep], 3, c=0.01) is None
