"""The device data path: index-slice batches, whole-batch augmentation, exact normalisation."""

import numpy as np
import pytest
import torch

from pipeline.data.layout import images_file, labels_file
from pipeline.models.inputs import IMAGENET, TENSORFLOW
from pipeline.runtime import tensors
from pipeline.runtime.tensors import Split, augment, batches, load_split, normalize


def split_of(n=10, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return Split(images=images, labels=torch.arange(n), device=torch.device("cpu"))


def test_shuffled_batches_visit_each_image_once_and_drop_only_the_incomplete_tail():
    split = split_of(10)
    seen = [y.tolist() for _, y in batches(split, 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    assert [len(b) for b in seen] == [4, 4]
    flat = sum(seen, [])
    assert len(set(flat)) == 8 and flat != sorted(flat)
    for x, y in batches(split, 4, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(x, split.images[y])  # images travel with their labels


def test_repeated_batches_show_each_image_as_often_in_new_orders():
    seen = [
        y.tolist()
        for _, y in batches(split_of(10), 4, shuffle=True, generator=torch.Generator().manual_seed(0), repeats=4)
    ]
    flat = sum(seen, [])
    assert [len(b) for b in seen] == [4] * 10  # 40 images shown: ten whole batches, none dropped
    assert sorted(flat) == sorted(list(range(10)) * 4)  # each image four times
    assert flat[:10] != flat[10:20]  # each pass its own order


def test_the_same_seed_gives_the_same_order():
    def order(seed):
        return [
            y.tolist() for _, y in batches(split_of(), 3, shuffle=True, generator=torch.Generator().manual_seed(seed))
        ]

    assert order(1) == order(1) and order(1) != order(2)


def test_evaluation_batches_keep_every_image_in_order():
    assert torch.cat([y for _, y in batches(split_of(10), 4, shuffle=False)]).tolist() == list(range(10))


def test_a_split_smaller_than_a_batch_is_one_batch():
    assert [len(y) for _, y in batches(split_of(3), 8, shuffle=True, generator=torch.Generator())] == [3]


def test_normalize_is_imagenet_standardisation_in_channels_last():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalize(x, IMAGENET)
    expected = [(v / 255 - m) / s for v, m, s in zip((0, 128, 255), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected), rtol=0, atol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32


def test_tensorflow_normalisation_maps_pixels_onto_minus_one_to_one():
    # the EfficientNet-Lite weights' inputs: (x - 127.5) / 127.5
    x = torch.tensor([0, 127.5, 255]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, TENSORFLOW).flatten(), torch.tensor([-1.0, 0.0, 1.0]), rtol=0, atol=1e-6)


def test_flip_alone_mirrors_some_images_and_leaves_the_others():
    split = split_of(64, size=6)
    out = augment(
        split.images,
        normalization=IMAGENET,
        crop_scale=(1.0, 1.0),
        flip=True,
        generator=torch.Generator().manual_seed(0),
    )
    plain = normalize(split.images, IMAGENET)
    same = [torch.allclose(out[i], plain[i], atol=1e-5) for i in range(64)]
    mirrored = [torch.allclose(out[i], plain[i].flip(-1), atol=1e-5) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_no_augmentation_is_plain_normalisation():
    split = split_of(4)
    torch.testing.assert_close(
        augment(split.images, normalization=IMAGENET, crop_scale=(1.0, 1.0), flip=False),
        normalize(split.images, IMAGENET),
    )


def test_random_crops_are_per_image_and_stay_inside_the_image():
    # left half black, right half white: a crop shows a mix that differs from image to image
    x = torch.zeros(32, 3, 16, 16, dtype=torch.uint8)
    x[..., 8:] = 255
    out = augment(
        x, normalization=IMAGENET, crop_scale=(0.1, 0.3), flip=False, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (32, 3, 16, 16)
    low, high = (
        normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), IMAGENET),
        normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), IMAGENET),
    )
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()  # interpolation, never extrapolation
    means = out.mean(dim=(1, 2, 3))
    assert means.std() > 0.1  # crops differ per image
    constant = augment(
        torch.full((4, 3, 16, 16), 77, dtype=torch.uint8), normalization=IMAGENET, crop_scale=(0.2, 1.0), flip=True
    )
    torch.testing.assert_close(constant, normalize(torch.full((4, 3, 16, 16), 77, dtype=torch.uint8), IMAGENET))


def test_translation_moves_each_image_by_whole_pixels_within_the_limit_without_blurring():
    side, limit = 32, 4  # translate 0.125 of 32 px: shifts of -4 … 4 px each way
    x = torch.randint(0, 256, (48, 3, side, side), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = augment(
        x,
        normalization=IMAGENET,
        crop_scale=(1.0, 1.0),
        flip=False,
        translate=0.125,
        generator=torch.Generator().manual_seed(0),
    )
    plain = normalize(x, IMAGENET)
    inner = slice(limit, side - limit)  # the pixels every allowed shift fills from inside the image
    shifts = []
    for i in range(len(x)):
        found = [
            (dx, dy)
            for dy in range(-limit, limit + 1)
            for dx in range(-limit, limit + 1)
            if torch.allclose(
                out[i, :, inner, inner],
                plain[i, :, limit + dy : side - limit + dy, limit + dx : side - limit + dx],
                atol=1e-4,
            )
        ]
        assert len(found) == 1, i  # exactly one whole-pixel shift explains the image: no interpolation
        shifts.append(found[0])
    dxs, dys = zip(*shifts)
    assert min(dxs) == min(dys) == -limit and max(dxs) == max(dys) == limit  # the whole range is drawn
    assert len(set(shifts)) > 20  # each image its own shift


@pytest.mark.parametrize("flip", [True, False])
def test_shifts_and_flips_gather_the_pixels_the_affine_map_samples(flip):
    """Without crops the shipped augmentation gathers whole pixels; with the same random draws, the
    affine map through grid_sample (forced here by a crop area a hair below 1) lands on the same
    pixel centres, reflected borders included: the two agree to rounding."""
    x = torch.randint(0, 256, (64, 3, 20, 20), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    gathered = augment(
        x,
        normalization=IMAGENET,
        crop_scale=(1.0, 1.0),
        flip=flip,
        translate=0.2,
        generator=torch.Generator().manual_seed(5),
    )
    sampled = augment(
        x,
        normalization=IMAGENET,
        crop_scale=(1.0 - 1e-7, 1.0),
        flip=flip,
        translate=0.2,
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(gathered, sampled, rtol=0, atol=1e-3)
    assert not torch.allclose(gathered, normalize(x, IMAGENET))  # the draws moved something


def test_augment_and_normalize_write_the_memory_format_asked_for():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        for crop in ((1.0, 1.0), (0.5, 1.0)):
            out = augment(
                x,
                normalization=IMAGENET,
                crop_scale=crop,
                flip=True,
                translate=0.125,
                generator=torch.Generator().manual_seed(0),
                memory_format=memory_format,
            )
            assert out.is_contiguous(memory_format=memory_format) and out.dtype == torch.float32
        assert normalize(x, IMAGENET, memory_format).is_contiguous(memory_format=memory_format)


def test_load_split_maps_the_arrays_without_copying_on_the_cpu(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    np.save(images_file(tmp_path, "val"), images)
    np.save(labels_file(tmp_path, "val"), np.array([0, 1, 1, 0, 1]))
    split = load_split(tmp_path, "val", torch.device("cpu"))
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    np.testing.assert_array_equal(split.images.numpy(), images)
    assert split.on_device and len(split) == 5
    assert not split.images.numpy().flags["OWNDATA"]  # a memory map, not a second copy in RAM


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_host_batches_equal_device_batches(tmp_path, monkeypatch):
    np.save(images_file(tmp_path, "train"), np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8))
    np.save(labels_file(tmp_path, "train"), np.arange(50) % 2)
    device = torch.device("cuda")
    on_gpu = load_split(tmp_path, "train", device)
    monkeypatch.setattr(tensors, "GPU_MEMORY_SHARE", 0.0)  # nothing fits: the pinned-host path
    pinned = load_split(tmp_path, "train", device)
    assert not pinned.on_device and pinned.images.is_pinned()
    a = list(batches(on_gpu, 8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    b = list(batches(pinned, 8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.device.type == "cuda"


def test_the_normalisation_made_once_under_inference_mode_still_serves_autograd():
    # normalize's per-channel constants are made once per device (not copied to a GPU every step);
    # the first may be made while validating, under inference mode, whose tensors autograd may not save
    tensors._affine_on.cache_clear()
    x = split_of(4).images
    with torch.inference_mode():
        normalize(x, IMAGENET)
    pixels = x.float().requires_grad_()  # a gradient with respect to the input pixels (a saliency map)
    normalize(pixels, IMAGENET).sum().backward()  # saves the cached scale for the backward pass
    std = torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels.grad, (1 / (255 * std)).expand_as(pixels))
    assert tensors._affine_on.cache_info().hits == 1
    expected = (x.float() / 255 - torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)) / std
    torch.testing.assert_close(normalize(x, IMAGENET), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("crop_scale", [(1.0, 1.0), (0.5, 1.0)], ids=["pixels", "crops"])
def test_on_a_gpu_a_training_step_never_makes_the_host_wait_and_augments_as_on_the_cpu(crop_scale):
    from pipeline.params import recipes
    from pipeline.runtime.device import Compute
    from pipeline.training.fit import build, train_step
    from pipeline.training.optim import make_optimizer

    cpu = split_of(16, size=32)
    device = torch.device("cuda")
    gpu = Split(images=cpu.images.to(device), labels=cpu.labels.remainder(2).to(device), device=device)
    how = {"crop_scale": crop_scale, "flip": True, "translate": 0.125, "normalization": IMAGENET}
    on_cpu = augment(cpu.images, generator=torch.Generator().manual_seed(0), **how)
    on_gpu = augment(gpu.images, generator=torch.Generator().manual_seed(0), **how)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)  # the same draws, the same pixels
    spec = recipes.load(overrides={"model": "resnet18", "train": {"crop_scale": list(crop_scale)}}).models[0]
    compute = Compute(device, "bf16")
    model = build(spec, gpu, 2, compute)
    optimizer = make_optimizer(model, spec.train)
    criterion = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    x, y = gpu.images, gpu.labels
    train_step(model, optimizer, criterion, x, y, spec.train, generator, compute)  # cuDNN's first choices
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any copy or read that waits for the GPU raises
    try:
        for _ in range(3):
            train_step(model, optimizer, criterion, x, y, spec.train, generator, compute)
    finally:
        torch.cuda.set_sync_debug_mode("default")
