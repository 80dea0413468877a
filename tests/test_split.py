"""The split stage: every member validated once, rejects listed with their reason, a deterministic
stratified split; and preprocess: the same bytes whatever the number of worker processes."""

import csv
import dataclasses
import shutil

import numpy as np
import pytest

from pipeline.common.errors import ParamError, StageError
from pipeline.data.images import DOGS_VS_CATS, Archive, load
from pipeline.data.layout import SPLITS, images_file, index_file, labels_file, read_index
from pipeline.params.sections import DataParams
from pipeline.preprocess import preprocess
from pipeline.split import assign, split
from tests.archives import LAYOUTS, tricky_expected, tricky_members, write_folder, write_zip

DATA = DataParams(
    source="unused", image_size=32, resize="crop", max_per_class=None, val_fraction=0.2, test_fraction=0.2, seed=0
)


def expected_outcome(layout):
    expected = tricky_expected(layout)
    usable = {name: e.label for name, e in expected.items() if e.reject is None and e.label is not None}
    rejects = {name: (e.reject if e.label is not None else "no class in its path") for name, e in expected.items()}
    rejects = {name: reason for name, reason in rejects.items() if name not in usable}
    return usable, rejects


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("packed", ["zip", "folder"])
def test_split_keeps_every_usable_image_and_lists_each_reject_with_its_reason(tmp_path, layout, packed):
    members = tricky_members(layout)
    source = (write_zip if packed == "zip" else write_folder)(tmp_path / f"source.{packed}", members)
    summary = split(source, tmp_path / "split", DATA, workers=2)

    usable, rejects = expected_outcome(layout)
    with open(tmp_path / "split" / "rejects.csv", newline="") as f:
        assert {row["member"]: row["reason"] for row in csv.DictReader(f)} == rejects
    listed = {}
    for name in SPLITS:
        members_, labels = read_index(index_file(tmp_path / "split", name), DOGS_VS_CATS)
        listed.update(zip(members_, labels.tolist()))
    assert listed == usable  # every usable image in exactly one split, with its layout's label
    assert summary["rejected"] == len(rejects) and summary["usable"] == len(usable)
    assert sum(summary["rejects"].values()) == len(rejects)


def members_of(n_cats, n_dogs):
    return [(f"train/cat.{i}.jpg", 0) for i in range(n_cats)] + [(f"train/dog.{i}.jpg", 1) for i in range(n_dogs)]


def test_the_split_is_stratified_disjoint_and_deterministic():
    members = members_of(100, 60)
    first, second = assign(members, DATA, DOGS_VS_CATS), assign(list(reversed(members)), DATA, DOGS_VS_CATS)
    assert first == second  # same params, same split, whatever order the archive listed
    names = [set(m for m, _ in first[s]) for s in SPLITS]
    assert set.union(*names) == {m for m, _ in members} and sum(map(len, names)) == len(members)
    # 20% test and 20% val of each class (sklearn rounds the test size up, the train size down)
    count = {s: [sum(1 for _, c in first[s] if c == k) for k in (0, 1)] for s in SPLITS}
    assert count == {"train": [60, 36], "val": [20, 12], "test": [20, 12]}
    other_seed = assign(members, dataclasses.replace(DATA, seed=1), DOGS_VS_CATS)
    assert other_seed["test"] != first["test"]


def test_max_per_class_caps_each_class_with_a_seeded_choice():
    capped = assign(members_of(100, 60), dataclasses.replace(DATA, max_per_class=50), DOGS_VS_CATS)
    chosen = [m for s in SPLITS for m in capped[s]]
    assert [sum(1 for _, c in chosen if c == k) for k in (0, 1)] == [50, 50]
    again = assign(members_of(100, 60), dataclasses.replace(DATA, max_per_class=50), DOGS_VS_CATS)
    assert again == capped


def test_max_per_class_larger_than_the_data_is_refused_with_the_counts():
    with pytest.raises(ParamError) as e:
        assign(members_of(100, 60), dataclasses.replace(DATA, max_per_class=80), DOGS_VS_CATS)
    assert e.value.key == "data.max_per_class" and "100 cat, 60 dog usable images" in str(e.value)


def test_train_photos_are_fewer_training_photos_nested_and_even_with_the_same_validation_and_test_photos():
    members = members_of(100, 60)  # 96 training photos: 60 cats, 36 dogs
    whole = assign(members, DATA, DOGS_VS_CATS)
    cuts = {n: assign(members, dataclasses.replace(DATA, train_photos=n), DOGS_VS_CATS) for n in (2, 10, 40, 80, 96)}
    for n, cut in cuts.items():
        assert (cut["val"], cut["test"]) == (whole["val"], whole["test"])  # what the models are judged on never moves
        assert len(cut["train"]) == n and set(cut["train"]) <= set(whole["train"])
    per_class = {n: [sum(1 for _, c in cut["train"] if c == k) for k in (0, 1)] for n, cut in cuts.items()}
    assert per_class == {2: [1, 1], 10: [5, 5], 40: [20, 20], 80: [44, 36], 96: [60, 36]}  # even, then the dogs run out
    assert set(cuts[2]["train"]) <= set(cuts[10]["train"]) <= set(cuts[40]["train"]) <= set(cuts[80]["train"])  # nested
    assert assign(members, dataclasses.replace(DATA, train_photos=40), DOGS_VS_CATS) == cuts[40]
    for n, message in (
        (97, "the split leaves 96 training photos"),
        (1, "every one of the 2 classes needs a training photo"),
    ):
        with pytest.raises(ParamError, match=message) as e:
            assign(members, dataclasses.replace(DATA, train_photos=n), DOGS_VS_CATS)
        assert e.value.key == "data.train_photos"


def test_split_files_are_identical_from_run_to_run(tmp_path):
    source = write_zip(tmp_path / "a.zip", tricky_members("microsoft"))
    split(source, tmp_path / "one", DATA, workers=1)
    split(source, tmp_path / "two", DATA, workers=2)
    for name in [*(f"{s}.csv" for s in SPLITS), "rejects.csv", "summary.json"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_preprocess_writes_one_uint8_array_per_split_identical_for_1_and_2_workers(tmp_path):
    source = write_zip(tmp_path / "a.zip", tricky_members("kaggle"))
    split(source, tmp_path / "split", DATA, workers=2)
    one = preprocess(source, tmp_path / "split", tmp_path / "one", image_size=40, resize="crop", channels=3, workers=1)
    preprocess(source, tmp_path / "split", tmp_path / "two", image_size=40, resize="crop", channels=3, workers=2)
    with Archive(source) as archive:
        for name in SPLITS:
            members, labels = read_index(index_file(tmp_path / "split", name), DOGS_VS_CATS)
            images = np.load(images_file(tmp_path / "one", name), mmap_mode="r")
            assert images.dtype == np.uint8 and images.shape == (len(members), 3, 40, 40)
            assert images_file(tmp_path / "one", name).read_bytes() == images_file(tmp_path / "two", name).read_bytes()
            np.testing.assert_array_equal(np.load(labels_file(tmp_path / "one", name)), labels)
            for i, member in enumerate(members):  # row i is member i, decoded as images.load does
                np.testing.assert_array_equal(images[i], load(archive.read(member), 40, "crop"))
    assert one["images"] == {s: len(read_index(index_file(tmp_path / "split", s), DOGS_VS_CATS)[0]) for s in SPLITS}
    assert one["classes"] == ["cat", "dog"] and one["channels"] == 3


def test_preprocess_refuses_to_start_without_the_disk_space(tmp_path, monkeypatch):
    source = write_zip(tmp_path / "a.zip", tricky_members("kaggle"))
    split(source, tmp_path / "split", DATA, workers=1)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StageError, match=r"needs 0\.00 GiB .* and only 0\.00 GiB are free"):
        preprocess(source, tmp_path / "split", tmp_path / "out", image_size=40, resize="crop", channels=3, workers=1)
    assert not any((tmp_path / "out").glob("*.npy"))
