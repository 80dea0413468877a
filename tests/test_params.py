"""params.yaml is checked before any work: every bad value names its key, its value and what is allowed."""

import pytest
import yaml

from pipeline import models
from pipeline.common.errors import ParamError
from pipeline.params import recipes, sections
from tests.helpers import REPO, documentation

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def load(**overrides):
    return recipes.load(REPO / "params.yaml", overrides)


def error(**overrides) -> ParamError:
    with pytest.raises(ParamError) as e:
        load(**overrides)
    return e.value


def test_the_shipped_params_are_valid_and_train_the_whole_zoo():
    p = load()
    assert p.model_names == models.names()
    assert p.data.source == "microsoft"
    resnet50 = next(s for s in p.models if s.name == "resnet50")
    assert resnet50.options["pretrained"] is True and resnet50.options["freeze"] == "backbone"
    assert resnet50.options["head"] == [512]
    assert resnet50.train.optimizer == RAW["train"]["optimizer"] and resnet50.train.lr == RAW["train"]["lr"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("all", None),
        ("resnet50", ["resnet50"]),
        (["vgg11", "alexnet"], ["alexnet", "vgg11"]),  # the zoo's order, whatever the order asked
        (["torchvision:mobilenet_v3_small", "nin"], ["nin", "torchvision:mobilenet_v3_small"]),
    ],
)
def test_model_selects_all_one_or_a_list(value, expected):
    assert load(model=value).model_names == (expected or models.names())


def test_an_unknown_model_lists_the_valid_names():
    e = error(model="resnet5O")
    assert e.key == "model" and e.value == "resnet5O"
    for name in models.names():
        assert name in str(e)
    assert "torchvision:" in str(e)
    assert error(model=["alexnet", "lenet"]).value == "lenet"
    assert error(model="torchvision:not_a_model").key == "model"


def test_train_epochs_reaches_every_architecture_and_max_epochs_only_caps():
    p = load(train={"epochs": 2})
    assert {s.name: s.train.run_epochs for s in p.models} == {name: 2 for name in models.names()}
    p = load(train={"epochs": 10})
    epochs = {s.name: s.train.run_epochs for s in p.models}
    assert epochs["resnet50"] == 3 and epochs["alexnet"] == 10


def test_per_architecture_overrides_reach_only_their_architecture():
    p = load(models={"alexnet": {"lr": 0.003, "batch_size": 16}})
    by_name = {s.name: s for s in p.models}
    assert (
        by_name["alexnet"].train.lr == 0.003 * 0.25 and by_name["alexnet"].train.batch_size == 16
    )  # its own lr, × its lr_scale
    assert by_name["resnet18"].train.lr == RAW["train"]["lr"]
    assert by_name["resnet18"].train.batch_size == RAW["train"]["batch_size"]


def test_a_train_lr_override_reaches_every_architecture_of_the_shipped_params():
    # what `dvc exp run -S train.lr=...` does: per-model rates are multiples of train.lr, so none stays behind
    before, after = load(), load(train={"lr": RAW["train"]["lr"] * 3})
    for a, b in zip(before.models, after.models, strict=True):
        assert b.train.lr == pytest.approx(3 * a.train.lr), a.name
    assert "keeps its own lr" not in load().recipe_table()


def test_every_train_key_override_reaches_each_model_or_is_named_before_training():
    p = load(
        train={"lr": 0.01, "weight_decay": 0.001, "epochs": 12},
        models={"resnet18": {"lr": 0.003}, "nin": {"lr_scale": 0.5}},
    )
    table = p.recipe_table()
    assert "warning: resnet18 keeps its own lr = 0.003 (models.resnet18.lr), not train.lr = 0.01" in table
    assert "nin" in table and "warning: nin" not in table  # a scale follows train.lr: nothing to warn about
    nin = next(s for s in p.models if s.name == "nin")
    assert nin.train.lr == pytest.approx(0.005)
    assert "0.005 (0.5 × lr)" in next(line for line in table.splitlines() if line.startswith("nin "))
    capped = load(
        train={"epochs": 12, "weight_decay": 0.001}, models={"resnet18": {"max_epochs": 5, "weight_decay": 0.001}}
    ).recipe_table()
    assert "warning: resnet18 trains 5 epochs, not train.epochs = 12 (models.resnet18.max_epochs = 5)" in capped
    assert "resnet18 keeps its own weight_decay" not in capped  # the same value as train's: nothing kept
    assert "warning: resnet18" not in load(train={"epochs": 3}, models={"resnet18": {"max_epochs": 5}}).recipe_table()


def test_the_recipe_table_has_one_row_per_selected_model_with_its_effective_values():
    p = load(model=["nin", "resnet18"], train={"lr": 0.02, "batch_size": 32, "epochs": 4})
    header, *rows = p.recipe_table().splitlines()
    assert header.split() == ["model", "optimizer", "lr", "weight_decay", "epochs", "batch_size", "keep"]
    assert [row.split()[0] for row in rows] == ["nin", "resnet18"]
    nin, resnet18 = (next(s for s in p.models if s.name == n) for n in ("nin", "resnet18"))
    assert rows[1].split()[:6] == [
        "resnet18",
        resnet18.train.optimizer,
        "0.02",
        f"{resnet18.train.weight_decay:g}",
        "4",
        "32",
    ]
    assert rows[0].split()[2] == f"{0.02 * nin.train.lr_scale:.3g}"


def test_numbers_yaml_reads_as_strings_are_accepted():
    # PyYAML reads 1e-3 (no dot) as the string "1e-3"; users write it that way all the time
    assert load(train={"lr": "1e-3"}).train.lr == 0.001


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"data": {"image_sise": 96}}, "data.image_sise"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"modle": "alexnet"}, "modle"),
        ({"models": {"resnet50": {"frezee": "none"}}}, "models.resnet50.frezee"),
        ({"models": {"alexnet": {"head": [10]}}}, "models.alexnet.head"),
        # the three transfer builders share one options type (TransferOptions): a typo is named in each
        ({"models": {"efficientnet_lite0": {"precomptue": True}}}, "models.efficientnet_lite0.precomptue"),
        ({"models": {"efficientnet_lite2": {"backbone_lr_scael": 0.1}}}, "models.efficientnet_lite2.backbone_lr_scael"),
    ],
)
def test_unknown_keys_are_named(overrides, key):
    e = error(**overrides)
    assert e.key == key
    assert "unknown key" in str(e)


@pytest.mark.parametrize(
    "overrides, key, value",
    [
        ({"data": {"val_fraction": 0}}, "data.val_fraction", 0),
        ({"data": {"test_fraction": 1.5}}, "data.test_fraction", 1.5),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "data.val_fraction + data.test_fraction", 1.0),
        ({"data": {"image_size": 0}}, "data.image_size", 0),
        ({"data": {"image_size": 96.5}}, "data.image_size", 96.5),
        ({"data": {"max_per_class": -1}}, "data.max_per_class", -1),
        ({"data": {"resize": "stretch"}}, "data.resize", "stretch"),
        ({"data": {"source": "synthetic:0"}}, "data.source", "synthetic:0"),
        ({"data": {"source": "synthetic:25001"}}, "data.source", "synthetic:25001"),  # odd: half of each class
        ({"data": {"source": "synthetic:100002"}}, "data.source", "synthetic:100002"),
        ({"data": {"source": "synthetic:-2"}}, "data.source", "synthetic:-2"),
        ({"data": {"source": "synthetic:2e4"}}, "data.source", "synthetic:2e4"),
        ({"data": {"source": "synthetic:"}}, "data.source", "synthetic:"),
        ({"data": {"source": "synthetic:\uff12\uff10"}}, "data.source", "synthetic:\uff12\uff10"),  # fullwidth 20
        ({"train": {"epochs": 0}}, "train.epochs", 0),
        ({"train": {"batch_size": -8}}, "train.batch_size", -8),
        ({"train": {"lr": 0}}, "train.lr", 0.0),
        ({"train": {"lr": "fast"}}, "train.lr", "fast"),
        ({"train": {"optimizer": "adam"}}, "train.optimizer", "adam"),
        ({"train": {"flip": "yes"}}, "train.flip", "yes"),
        ({"train": {"crop_scale": [0.9, 0.5]}}, "train.crop_scale", [0.9, 0.5]),
        ({"runtime": {"device": "gpu"}}, "runtime.device", "gpu"),
        ({"models": {"alexnet": {"lr": -1}}}, "models.alexnet.lr", -1.0),
        ({"models": {"alexnet": {"lr_scale": 0}}}, "models.alexnet.lr_scale", 0.0),
        ({"train": {"translate": 0.5}}, "train.translate", 0.5),
        ({"train": {"keep": "first"}}, "train.keep", "first"),
        ({"models": {"resnet50": {"freeze": "layer9"}}}, "models.resnet50.freeze", "layer9"),
        ({"models": {"resnet50": {"head": [512, 0]}}}, "models.resnet50.head", [512, 0]),
        ({"models": {"resnet50": {"pretrained": "no"}}}, "models.resnet50.pretrained", "no"),
        ({"models": {"vgg13": {"lr": 0.1}}}, "models.vgg13", "vgg13"),
    ],
)
def test_bad_values_name_the_param_and_the_value(overrides, key, value):
    e = error(**overrides)
    assert (e.key, e.value) == (key, value)
    assert str(e).startswith(f"{key} = {e.value!r}: ") and e.allowed


def test_a_synthetic_count_of_thousands_of_digits_is_refused_at_once_in_a_short_message():
    e = error(data={"source": "synthetic:" + "9" * 100_000})  # int() would raise its own ValueError past 4,300 digits
    assert e.key == "data.source" and "from 2 to 100,000" in str(e) and len(str(e)) < 500


def test_image_size_too_small_for_alexnet_and_nin_is_refused_for_them_only():
    e = error(data={"image_size": 64})
    assert e.key == "data.image_size" and "alexnet" in str(e) and "65" in str(e)
    assert error(data={"image_size": 66}, model="nin").allowed.startswith("nin needs at least 67 px")
    assert load(data={"image_size": 64}, model=["vgg11", "resnet18", "googlenet"]).data.image_size == 64


def test_a_missing_key_is_named():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["train"]["lr"]
    with pytest.raises(ParamError, match=r"^train\.lr = None: is missing"):
        recipes.parse(raw)


def test_the_data_stages_read_the_data_section_alone(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"] = "not-a-model"  # the data stages do not need the model registry...
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert sections.load_data(tmp_path / "params.yaml").image_size == raw["data"]["image_size"]
    raw["data"]["seed"] = "zero"  # ...but their own section is checked as strictly
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamError, match="data.seed"):
        sections.load_data(tmp_path / "params.yaml")


def test_every_key_the_readme_sets_with_dash_s_is_in_params_yaml():
    # dvc exp run -S only overrides keys that exist ("Key ... is not in struct"): a documented command must not hit that
    import re

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    keys = set(re.findall(r"-S '?([a-z_][\w.]*)=", documentation()))
    assert len(keys) > 10
    missing = []
    for key in sorted(keys):
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    assert missing == []
