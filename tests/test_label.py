"""Labelling a folder: which images are worth a label, labels spread over neighbours, and the page's server."""
import shutil
import signal

import numpy as np
import pytest

from cnncodes.labeling import Propagation, choose_to_label

from .conftest import cli, free_port, start_server, write_image_folder

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


def blobs(per: int = 60, seed: int = 0, noise_seed: int | None = None):
    """Three well separated groups of 32-d points (noise_seed: other points around the same centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, 32)) * 5 + 10
    y = np.repeat(np.arange(3), per)
    noise = rng if noise_seed is None else np.random.default_rng(noise_seed)
    return (centres[y] + noise.normal(0, 1, (len(y), 32))).astype(np.float32), y


def test_the_first_choices_cover_every_group_and_unsure_ones_come_when_asked():
    from cnncodes.labeling.choose import SHORTLIST, reduce_codes

    x, y = blobs()
    first = choose_to_label(x, np.full(len(y), -1), 3)
    assert sorted(y[first]) == [0, 1, 2]
    # the server reduces the codes once and passes them page after page: the same choices
    assert np.array_equal(choose_to_label(x, np.full(len(y), -1), 3, points=reduce_codes(x)), first)
    labels = np.full(len(y), -1)
    labels[20:30], labels[80:90], labels[120:130] = 0, 1, 2
    graph = Propagation(x)
    scores = np.sort(graph.spread(labels), axis=1)
    margin = np.where(labels < 0, scores[:, -1] - scores[:, -2], np.inf)
    asked = choose_to_label(x, labels, 5, propagation=graph, cold_start=10)
    assert len(set(asked)) == 5 and (labels[asked] < 0).all()
    assert set(asked) <= set(np.argsort(margin, kind="stable")[:5 * SHORTLIST])  # among the least sure
    offer = np.ones(len(y), bool)
    offer[:60] = False  # skipped images are never offered
    assert not set(choose_to_label(x, labels, 5, cold_start=10, offer=offer)) & set(range(60))
    assert not set(choose_to_label(x, np.full(len(y), -1), 5, offer=offer)) & set(range(60))


def test_a_page_after_many_labels_clusters_by_mini_batches_and_stays_typical_and_diverse(monkeypatch):
    """Beyond FULL_KMEANS_CLUSTERS clusters (labels + page) k-means runs by mini-batches: the page still takes one
    image from each of the groups that hold no label yet, and never a labelled or a skipped one."""
    from cnncodes.labeling import choose

    monkeypatch.setattr(choose, "FULL_KMEANS_CLUSTERS", 8)  # 6 labels + a page of 6: 12 clusters
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (12, 32)) * 6
    group = np.repeat(np.arange(12), 40)
    x = (centres[group] + rng.normal(0, 1, (len(group), 32))).astype(np.float32)
    labels = np.full(len(group), -1)
    labels[[40 * g for g in range(6)]] = 0  # one label in each of groups 0-5
    offer = np.ones(len(group), bool)
    offer[41] = False
    asked = choose_to_label(x, labels, 6, offer=offer)
    assert sorted(group[asked]) == [6, 7, 8, 9, 10, 11] and (labels[asked] < 0).all() and 41 not in asked


def test_one_label_per_group_spreads_to_the_whole_group():
    x, y = blobs()
    labels = np.full(len(y), -1)
    labels[[0, 60, 120]] = [0, 1, 2]
    spread = Propagation(x, neighbours=10)
    assert (spread.spread(labels).argmax(1) == y).mean() == 1.0
    model, _ = spread.classifier(labels)
    fresh, truth = blobs(seed=0, noise_seed=7)
    assert (model.predict(fresh) == truth).mean() >= 0.95  # new codes, as extracted
    assert [model.predict(fresh[n:n + 1])[0] for n in (0, 60, 120)] == list(model.predict(fresh)[[0, 60, 120]])


def test_the_first_choices_compare_the_columns_the_graph_compares():
    """Mid-level codes beside a network's final code (layers=multi): large and uninformative here. Choosing on all
    columns misses groups; with a propagation over the final columns, the choice uses those and covers every group."""
    x, y = blobs()
    mid = np.random.default_rng(5).normal(0, 40, (len(x), 64)).astype(np.float32) + 60
    codes = np.hstack([mid, x])
    unlabelled = np.full(len(y), -1)
    assert len(set(y[choose_to_label(codes, unlabelled, 3)])) < 3
    graph = Propagation(codes, parts=[slice(64, 96)])
    assert sorted(y[choose_to_label(codes, unlabelled, 3, propagation=graph)]) == [0, 1, 2]


def test_parts_weigh_each_networks_codes_the_same():
    """Codes of two networks side by side, the second's large and uninformative: compared as one vector, its noise
    decides the neighbours; part by part, each normalised on its own (each network weighs the same), the groups
    the first network sees come through. Each part's features are its power-normalised codes over sqrt(2)."""
    from cnncodes.labeling.propagate import power_normalised

    x, y = blobs()
    noise = np.random.default_rng(3).normal(0, 50, (len(x), 64)).astype(np.float32) + 100
    codes = np.hstack([x, noise])
    labels = np.full(len(y), -1)
    labels[[0, 60, 120]] = [0, 1, 2]
    whole = Propagation(codes)
    parted = Propagation(codes, parts=[slice(0, 32), slice(32, 96)])
    assert (whole.spread(labels).argmax(1) == y).mean() < 0.7
    assert (parted.spread(labels).argmax(1) == y).mean() >= 0.95
    expected = np.hstack([power_normalised(x)[0], power_normalised(noise)[0]]) / np.sqrt(2)
    assert np.allclose(parted.features(codes), expected, atol=1e-5)


def two_groups(sizes, labelled, seed=1):
    """Two touching groups of 16-d points along one axis, `labelled` random labels in each: (codes, truth, labels)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], sizes)
    x = (np.where(y[:, None] == 0, 0.0, 4.0) * np.eye(16)[0] + rng.normal(0, 1, (len(y), 16)) + 3).astype(np.float32)
    labels = np.full(len(y), -1)
    for k, n in enumerate(labelled):
        labels[rng.choice(np.flatnonzero(y == k), n, replace=False)] = k
    return x, y, labels


def test_class_mass_follows_the_prior_asked_for():
    """Equal groups, 20 labels in one and 1 in the other: spread as Zhou et al. write it (prior "none"), the many
    labels flood the neighbour; the same mass for every class keeps it. A group of 540 beside one of 60, labelled
    in proportion: the same mass for every class floods the large group with the small one; the labels' shares
    (the default) and no normalisation do not."""
    from cnncodes.labeling.propagate import ALPHA, STEPS, power_normalised

    x, y, labels = two_groups((150, 150), (20, 1))
    spread = Propagation(x)
    accuracy = {prior: (spread.spread(labels, prior=prior).argmax(1) == y).mean() for prior in ("none", "equal")}
    assert accuracy["none"] <= 0.6 and accuracy["equal"] >= 0.9, accuracy
    given = np.eye(2)[np.maximum(labels, 0)] * (labels >= 0)[:, None]  # "none" is the plain iteration, by hand
    plain = given.copy()
    for _ in range(STEPS):
        plain = ALPHA * (spread.graph @ plain) + (1 - ALPHA) * given
    assert np.allclose(spread.spread(labels, prior="none"), plain / plain.sum(1, keepdims=True), atol=1e-5)
    x, y, labels = two_groups((540, 60), (27, 3))
    spread = Propagation(x)
    accuracy = {prior: (spread.spread(labels, prior=prior).argmax(1) == y).mean()
                for prior in ("none", "labels", "equal")}
    assert min(accuracy["none"], accuracy["labels"]) >= accuracy["equal"] + 0.05, accuracy
    assert np.array_equal(spread.spread(labels), spread.spread(labels, prior="labels"))
    root = np.sign(x) * np.sqrt(np.abs(x))
    expected = (root - root.mean(0)) / np.linalg.norm(root - root.mean(0), axis=1, keepdims=True)
    assert np.allclose(power_normalised(x)[0], expected, atol=1e-5)


def manifest_rows(folder) -> dict:
    import csv

    with open(folder / "labels.csv", newline="") as f:
        return {r["path"]: r["label"] for r in csv.DictReader(f)}


@pytest.mark.slow  # a server and the network on 60 images
def test_label_answers_survive_a_killed_server_and_bad_input_loses_nothing(tiny_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(tiny_folder, folder)
    truth = {f"{c}/{f.name}": c for c in ("bars", "checkers", "discs") for f in (folder / c).iterdir()}
    proc, url = start_server("label", folder, ready="/api/state")
    try:
        answered = {}
        while len(answered) < 20:
            items = httpx.get(url + "/api/next?n=5", timeout=60).json()["images"]
            answers = {i["path"]: truth[i["path"]] for i in items}
            state = httpx.post(url + "/api/label", json={"answers": answers}, timeout=60).json()
            answered |= answers
        assert state["labelled"] == len(answered) and state["accuracy"] >= 0.9
        page = httpx.get(url + "/api/next?n=6", timeout=60).json()["images"]
        suggested = {i["path"]: i["suggestion"] for i in page}
        assert sum(truth[p] == s for p, s in suggested.items()) >= 5  # three easy classes
        assert httpx.post(url + "/api/label", json={"answers": suggested}, timeout=60).status_code == 200
        answered |= suggested
        undone = next(iter(suggested))
        # what another web page in the same browser could send: a form post, or a request under another host name
        assert httpx.post(url + "/api/undo", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
        assert httpx.get(url + "/api/next", headers={"Host": "attacker.example"}).status_code == 400
        assert httpx.post(url + "/api/undo", json={}, timeout=60).json()["undone"]  # the whole page of suggestions
        answered = {p: c for p, c in answered.items() if p not in suggested}
        assert httpx.post(url + "/api/label", json={"answers": {undone: truth[undone]}}).status_code == 200
        answered[undone] = truth[undone]

        bad = {"unknown image": ({"answers": {"nope.png": "bars"}}, 404),
               "empty class": ({"answers": {undone: "   "}}, 400),
               "huge class": ({"answers": {undone: "x" * 500}}, 400),
               "not the format": ({"labels": ["bars"]}, 400)}
        for what, (body, status) in bad.items():
            answer = httpx.post(url + "/api/label", json=body)
            assert answer.status_code == status and answer.json()["error"], what
        html = next(p for p in truth if p not in answered)
        assert httpx.post(url + "/api/label", json={"answers": {html: "<b>bold</b>"}}).status_code == 200
        answered[html] = "<b>bold</b>"
        assert "innerHTML" not in httpx.get(url + "/").text  # class names reach the page as text, never as markup

        # another program edits labels.csv meanwhile: refused, and neither its edit nor our answers are lost
        outside = next(p for p in truth if p not in answered)
        text = (folder / "labels.csv").read_text().replace(f"{outside},\n", f"{outside},edited\n")
        (folder / "labels.csv").write_text(text)
        later = next(p for p in truth if p not in answered and p != outside)
        refused = httpx.post(url + "/api/label", json={"answers": {later: truth[later]}})
        assert refused.status_code == 409 and "another program" in refused.json()["error"]
        assert httpx.post(url + "/api/label", json={"answers": {later: truth[later]}}).status_code == 200
        answered[later] = truth[later]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows = manifest_rows(folder)
    assert {p: rows[p] for p in answered} == answered
    assert rows[outside] == "edited"
    proc, url = start_server("label", folder, ready="/api/state")
    try:
        assert httpx.get(url + "/api/state").json()["labelled"] == sum(bool(v) for v in manifest_rows(folder).values())
    finally:
        proc.terminate()
        proc.wait(30)


def test_label_refuses_other_hosts_and_names_a_missing_folder(tmp_path):
    off = cli("label", tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert off.returncode != 0 and "this machine only" in off.stderr
    missing = cli("label", tmp_path / "nope")
    assert missing.returncode != 0 and "not a folder" in missing.stderr


@pytest.mark.slow  # a server, a browser and the network on 60 images
def test_the_page_labels_by_keyboard_and_a_restart_finds_every_answer(tiny_folder, tmp_path):
    from .browser import Browser

    folder = tmp_path / "photos"
    shutil.copytree(tiny_folder, folder)
    truth = {f"{c}/{f.name}": c for c in ("bars", "checkers", "discs") for f in (folder / c).iterdir()}
    seeds = [f"{c}/{n:03d}.png" for c in ("bars", "checkers", "discs") for n in (0, 1)]
    (folder / "labels.csv").write_text("path,label\n" + "".join(f"{p},{truth[p]}\n" for p in seeds))
    proc, url = start_server("label", folder, ready="/api/state")
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(url)
        browser.wait_for("document.querySelectorAll('.card').length === 12")
        # each suggestion says how many labels its class has (two each here): a share of 100% from one is a guess
        browser.wait_for("[...document.querySelectorAll('.card div')].some(d => /% \\(2 labels\\)$/.test(d.textContent))")
        typed = {}
        while len(typed) < 20:
            path = browser.wait_for("document.querySelector('.card.focus:not(.done)')?.dataset.path")
            browser.press(str(["bars", "checkers", "discs"].index(truth[path]) + 1))
            typed[path] = truth[path]
            browser.wait_for(f"document.querySelector('.card.focus')?.dataset.path !== {path!r}")
        browser.wait_for(f"document.getElementById('status').textContent.startsWith('{len(typed) + 6} of')")
        browser.wait_for("document.querySelectorAll('.card:not(.done)').length > 1")
        browser.press("Enter", shift=True)  # the whole page's suggestions
        accepted = browser.wait_for("(() => { const m = document.getElementById('status').textContent.match(/^(\\d+) of/);"
                                    f" return m && +m[1] > {len(typed) + 6} ? +m[1] : 0; }})()")
        browser.press("Backspace")  # takes the page back
        browser.wait_for(f"document.getElementById('status').textContent.startsWith('{len(typed) + 6} of')")
        assert accepted > len(typed) + 6
    finally:
        browser.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows = manifest_rows(folder)
    assert {p: rows[p] for p in typed} == typed and sum(bool(v) for v in rows.values()) == len(typed) + 6
    proc, url = start_server("label", folder, ready="/api/state")
    try:
        assert httpx.get(url + "/api/state").json()["labelled"] == len(typed) + 6
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_manifest_keeps_every_image_and_both_sides_edits(tmp_path):
    from cnncodes.labeling.manifest import ChangedOutside, Manifest

    manifest = Manifest(tmp_path, ["a.png", "b.png"])
    manifest.set({"a.png": "cat"})
    (tmp_path / "labels.csv").write_text("path,label\na.png,dog\n")  # another program keeps one row only
    with pytest.raises(ChangedOutside):
        manifest.set({"b.png": "cat"})
    manifest.set({"b.png": "cat"})
    assert manifest_rows(tmp_path) == {"a.png": "dog", "b.png": "cat"}


def test_a_hand_written_manifest_keeps_its_header_and_columns(tmp_path):
    from cnncodes.labeling.manifest import Manifest

    (tmp_path / "labels.csv").write_text("Path,Label,Split,Note\na.png,cat,train,blurry\n")
    Manifest(tmp_path, ["a.png", "b.png"]).set({"b.png": "dog"})
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines == ["Path,Label,Split,Note", "a.png,cat,train,blurry", "b.png,dog,,"]


def test_an_absolute_path_names_the_image_a_run_names(tmp_path):
    """A hand-written manifest may list an image by its absolute path: the labelling tool finds its label under the
    id a run gives it, and writes the row back by that id (no second row for the same image)."""
    from cnncodes.data.datasets import manifest
    from cnncodes.labeling.manifest import Manifest

    write_image_folder(tmp_path / "img", 2, seed=0)
    first, second = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "img").rglob("*.png"))[:2]
    (tmp_path / "labels.csv").write_text(f"path,label\n{tmp_path / first},cat\n")
    labels = Manifest(tmp_path, [first, second])
    assert labels.label(first) == "cat"
    labels.set({second: "dog"})
    assert manifest_rows(tmp_path) == {first: "cat", second: "dog"}
    assert sorted(manifest(tmp_path / "labels.csv", cache_dir=tmp_path / "c").ids) == [first, second]
