"""A person's verdicts on doubtful labels (data.verdicts): read strictly, applied by the split to
the training and validation photos only, the test photos kept with both labels, evaluated both
ways with the errors they explain counted by hand, and rerun by the real DVC when they change."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from pipeline.common.errors import ParamError
from pipeline.data import synthetic, verdicts
from pipeline.data.images import DOGS_VS_CATS
from pipeline.data.layout import EXCLUDED, SPLITS, index_file, read_index, verdict_labels_file
from pipeline.evaluation.metrics import with_verdicts
from pipeline.params.sections import DataParams
from pipeline.preprocess import preprocess
from pipeline.split import split
from tests.helpers import committed_project, dvc

DATA = DataParams(
    source="unused", image_size=16, resize="crop", max_per_class=None, val_fraction=0.2, test_fraction=0.2, seed=0
)


def test_a_verdict_file_reads_keep_exclude_and_relabel_with_comments():
    text = "# reviewed\ntrain/cat.1.jpg: exclude   # neither\ntrain/dog.2.jpg: relabel cat\n'train/a b: c.jpg': keep\n"
    assert verdicts.parse(text, "v.yaml") == {
        "train/cat.1.jpg": verdicts.Verdict("exclude"),
        "train/dog.2.jpg": verdicts.Verdict("relabel", "cat"),
        "train/a b: c.jpg": verdicts.Verdict("keep"),
    }
    assert verdicts.parse("# nothing yet\n", "v.yaml") == {} and verdicts.parse("{}\n", "v.yaml") == {}


@pytest.mark.parametrize(
    "text, said",
    [
        ("train/cat.1.jpg: delete\n", "is not a verdict: use keep, exclude or relabel <class>"),
        ("train/cat.1.jpg: relabel\n", "is not a verdict"),
        ("train/cat.1.jpg: 3\n", "is not a verdict"),
        ("- train/cat.1.jpg\n", "must map each photo to its verdict"),
        ("train/cat.1.jpg: exclude\ntrain/cat.1.jpg: keep\n", "train/cat.1.jpg"),  # given twice: which one stands?
        ("1: exclude\n", "is not a photo's name"),
    ],
)
def test_a_bad_verdict_file_is_one_error_naming_the_param_and_the_photo(text, said):
    with pytest.raises(ParamError, match="data.verdicts") as e:
        verdicts.parse(text, "v.yaml")
    assert said in str(e.value)


def test_a_relabel_to_a_class_the_source_lacks_is_refused_even_for_a_photo_it_lacks():
    with pytest.raises(ParamError, match="relabel horse, and the source's classes are cat, dog"):
        verdicts.check({"elsewhere/x.jpg": verdicts.Verdict("relabel", "horse")}, DOGS_VS_CATS, "v.yaml")


def photos_of(folder):
    return {name: dict(zip(*read_index(index_file(folder, name), DOGS_VS_CATS))) for name in SPLITS}


def test_the_split_applies_verdicts_to_training_and_validation_and_keeps_the_test_photos(tmp_path):
    archive = tmp_path / "train.zip"
    synthetic.make_archive(archive, per_class=20, size=24)
    plain = split(archive, tmp_path / "plain", dataclasses.replace(DATA, verdicts="verdicts/none.yaml"), workers=1)
    before = photos_of(tmp_path / "plain")
    train, test = sorted(before["train"]), sorted(before["test"])
    cat_in_test = next(m for m in test[1:] if before["test"][m] == 0)
    chosen = {
        train[0]: "exclude",
        train[1]: "relabel dog" if before["train"][train[1]] == 0 else "relabel cat",
        test[0]: "exclude",
        cat_in_test: "relabel dog",
        "train/cat.999.jpg": "exclude",
        train[2]: "keep",
    }
    file = tmp_path / "mine.yaml"
    file.write_text("".join(f"{m}: {v}\n" for m, v in chosen.items()))
    judged = dataclasses.replace(DATA, verdicts=str(file))
    summary = split(archive, tmp_path / "judged", judged, workers=1)
    after = photos_of(tmp_path / "judged")

    assert after["test"] == before["test"]  # the same test photos, with their given labels
    assert train[0] not in after["train"] and after["train"][train[1]] == 1 - before["train"][train[1]]
    assert {m: v for m, v in after["train"].items() if m not in (train[0], train[1])} == {
        m: v for m, v in before["train"].items() if m not in (train[0], train[1])
    }
    assert after["val"] == before["val"]
    assert summary["verdicts"]["test_labels"] == {test[0]: None, cat_in_test: "dog"}
    assert summary["verdicts"]["given"] == 6 and summary["verdicts"]["in_source"] == 5  # cat.999 is not in this source
    assert summary["verdicts"]["changed"]["train"] == {"exclude": 1, "relabel": 1} and plain["verdicts"]["given"] == 0
    with open(tmp_path / "judged" / "verdicts.csv", newline="") as f:
        rows = {r["member"]: (r["split"], r["verdict"]) for r in csv.DictReader(f)}
    assert (
        rows[train[0]] == ("train", "exclude") and rows[cat_in_test] == ("test", "relabel dog") and train[2] not in rows
    )

    again = split(archive, tmp_path / "again", judged, workers=2)  # deterministic: the same files, whatever the workers
    assert again == summary
    for name in ("train.csv", "val.csv", "test.csv", "verdicts.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "judged" / name).read_bytes()

    preprocess(archive, tmp_path / "judged", tmp_path / "arrays", image_size=16, resize="crop", channels=3, workers=1)
    labels_after = np.load(verdict_labels_file(tmp_path / "arrays"))
    members, given = read_index(index_file(tmp_path / "judged", "test"), DOGS_VS_CATS)
    expected = [EXCLUDED if m == test[0] else 1 if m == cat_in_test else int(g) for m, g in zip(members, given)]
    assert labels_after.tolist() == expected
    assert json.loads((tmp_path / "arrays" / "meta.json").read_text())["verdicts"]["file"] == str(file)


def test_metrics_with_verdicts_count_the_errors_they_explain_by_hand():
    labels = np.array([0, 0, 1, 1, 0])
    after = np.array([0, EXCLUDED, 0, 1, 0])  # photo 1 excluded, photo 2 relabelled cat
    predicted = np.array([0, 1, 0, 0, 1])
    proba = np.eye(2)[predicted] * 0.8 + 0.1
    found = with_verdicts(labels, after, proba, DOGS_VS_CATS)
    # as given: wrong on 1, 2, 3, 4; explained: 1 (excluded) and 2 (relabelled to what it said); with the verdicts: 0, 2
    # right of 0, 2, 3, 4
    assert (found["errors_as_given"], found["errors_explained"], found["excluded"], found["relabelled"]) == (4, 2, 1, 1)
    assert found["images"] == 4 and found["accuracy"] == 0.5
    assert with_verdicts(labels, labels.copy(), proba, DOGS_VS_CATS) is None


@pytest.mark.slow  # the real dvc
def test_dvc_reruns_the_split_when_the_verdicts_change_and_nothing_before_it(tmp_path_factory):
    root = committed_project(
        tmp_path_factory,
        "verdicts",
        {"model": "resnet18", "data": {"verdicts": "verdicts/mine.yaml", "image_size": 32}},
        per_class=12,
        size=24,
        files={"verdicts/mine.yaml": "{}\n"},
    )
    dvc(root, "repro", "split")
    assert json.loads(dvc(root, "status", "split", "--json").stdout) == {}
    test = (root / "data" / "split" / "test.csv").read_text()
    member = (root / "data" / "split" / "train.csv").read_text().splitlines()[1].split(",")[0]
    (root / "verdicts" / "mine.yaml").write_text(f"{member}: exclude\n")
    changed = json.loads(dvc(root, "status", "--json").stdout)
    assert "split" in changed and "check" not in changed and "download" not in changed
    assert any("verdicts/mine.yaml" in json.dumps(entry) for entry in changed["split"])
    dvc(root, "repro", "split")
    assert member not in (root / "data" / "split" / "train.csv").read_text()
    assert (root / "data" / "split" / "test.csv").read_text() == test
    assert "check" not in json.loads(dvc(root, "status", "--json").stdout)


def test_a_verdict_file_that_is_not_text_or_not_a_file_is_one_line(tmp_path):
    import os

    from pipeline.common.errors import StageError

    (tmp_path / "latin1.yaml").write_bytes("train/chat.1.jpg: exclude # café\n".encode("latin-1"))
    with pytest.raises(ParamError, match="is not UTF-8 text"):
        verdicts.read(tmp_path / "latin1.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")  # a read would block forever
    with pytest.raises(StageError, match="verdict file"):
        verdicts.read(tmp_path / "fifo.yaml")
    with pytest.raises(StageError, match="does not exist"):
        verdicts.read(tmp_path / "missing.yaml")
