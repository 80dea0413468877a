"""pipeline.data.images against answers known by construction: labels, archives, rejects, conversions, sizes."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import images
from pipeline.data.images import Archive, RejectError, decode, fit, label_of, load
from tests import archives
from tests.archives import WHITE, encode, image, jpeg, noise, png

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def assert_close(got: tuple[int, ...], want: tuple[int, ...], tolerance: int = 0) -> None:
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= tolerance, f"{got} != {want} ± {tolerance}"


def rejection(data: bytes, **kwargs: object) -> str:
    with pytest.raises(RejectError) as caught:
        decode(data, **kwargs)
    return caught.value.reason


def gradient(size: tuple[int, int]) -> Image.Image:
    """Red rising left to right, green top to bottom: smooth, so every scale of it looks alike."""
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8))


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [
        # Kaggle file names, any folder, any case
        ("train/cat.1.jpg", 0),
        ("train/dog.12499.jpg", 1),
        ("cat.0.jpg", 0),
        ("cat.jpg", 0),
        ("Train/CAT.7.JPG", 0),
        ("dogs-vs-cats/train/Dog.3.jpeg", 1),
        # the Microsoft copy and class folders: the parent folder
        ("PetImages/Cat/1.jpg", 0),
        ("PetImages/Dog/12499.jpg", 1),
        ("PetImages/Cat/Thumbs.db", 0),
        ("cat/x.jpg", 0),
        ("dogs/x.png", 1),
        ("CATS/x.jpg", 0),
        ("data/train/dogs/x.jpg", 1),
        # file name and folder agreeing, and disagreeing
        ("cats/cat.5.jpg", 0),
        ("train/dog/dog.1.jpg", 1),
        ("dog/cat.1.jpg", None),
        ("PetImages/Cat/dog.2.jpg", None),
        # nothing in the layout names a class
        ("test1/12.jpg", None),
        ("readme[1].txt", None),
        ("train/Thumbs.db", None),
        ("catalog.1.jpg", None),
        ("hotdog/1.jpg", None),
        ("dog_1.jpg", None),
        ("cat", None),
        ("cat/kitten/1.jpg", None),  # only the parent folder counts
    ],
)
def test_label_of(name: str, label: int | None) -> None:
    assert label_of(name) == label


# --- archives: every tricky member, zipped and as a folder ---------------------------------------


def open_tricky(tmp_path: Path, layout: str, kind: str) -> Archive:
    """The layout's tricky members with macOS junk beside them (and an empty folder): must be ignored."""
    members = archives.tricky_members(layout)
    junk = archives.mac_junk(members, zipped=kind == "zip") | {"empty/": b""}
    if kind == "zip":
        return Archive(archives.write_zip(tmp_path / "train.zip", members | junk))
    return Archive(archives.write_folder(tmp_path / "train", members | junk))


@pytest.mark.parametrize("kind", ["zip", "folder"])
@pytest.mark.parametrize("layout", archives.LAYOUTS)
def test_archive_names_and_bytes(tmp_path: Path, layout: str, kind: str) -> None:
    members = archives.tricky_members(layout)
    with open_tricky(tmp_path, layout, kind) as archive:
        assert archive.names() == sorted(members)
        for name, data in members.items():
            assert archive.read(name) == data


@pytest.mark.parametrize("kind", ["zip", "folder"])
@pytest.mark.parametrize("layout", archives.LAYOUTS)
def test_every_member_outcome(tmp_path: Path, layout: str, kind: str) -> None:
    expected = archives.tricky_expected(layout)
    with open_tricky(tmp_path, layout, kind) as archive:
        for name in archive.names():
            want = expected[name]
            assert label_of(name) == want.label, name
            if want.reject is not None:
                assert rejection(archive.read(name)) == want.reject, name
                continue
            img = decode(archive.read(name))
            assert (img.mode, img.size) == ("RGB", want.size), name
            for xy, rgb in want.pixels.items():
                assert_close(img.getpixel(xy), rgb, want.tolerance)


def test_tricky_members_are_what_they_claim() -> None:
    """The fixtures really exercise each case, rather than e.g. Pillow silently saving RGB."""
    members = archives.tricky_members("kaggle")

    def opened(number: int, ext: str = "jpg", cls: str = "cat") -> Image.Image:
        return Image.open(io.BytesIO(members[f"train/{cls}.{number}.{ext}"]))

    assert [opened(n).format for n in (1, 5, 6, 7)] == ["JPEG", "PNG", "GIF", "BMP"]
    assert [opened(n).mode for n in (8, 9)] == ["L", "CMYK"]
    assert opened(10).getexif()[0x0112] == 6
    palette = opened(11, "png")
    assert palette.mode == "P" and "transparency" in palette.info
    assert opened(12, "png").mode == "RGBA"
    truncated, whole = members["train/dog.4.jpg"], jpeg(noise(seed=1))
    assert whole.startswith(truncated) and len(truncated) < len(whole)


def test_archive_refuses_other_paths(tmp_path: Path) -> None:
    (tmp_path / "train.tar").write_bytes(b"not a zip")
    with pytest.raises(zipfile.BadZipFile):
        Archive(tmp_path / "train.tar")
    with pytest.raises(FileNotFoundError):
        Archive(tmp_path / "missing.zip")


# --- conversions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "value", "fmt", "grey"),
    [
        ("L", 77, "PNG", 77),
        ("1", 1, "PNG", 255),
        ("LA", (77, 255), "PNG", 77),
        ("I;16", 0x8080, "PNG", 0x80),  # 16-bit grey keeps its high byte
        ("I", 77, "TIFF", 77),
        ("F", 77.0, "TIFF", 77),
    ],
)
def test_grey_modes_become_equal_channels(mode: str, value: object, fmt: str, grey: int) -> None:
    data = encode(image(value, (8, 6), mode), fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    img = decode(data)
    assert img.mode == "RGB"
    assert (np.asarray(img) == grey).all()


def test_grey_jpeg_replicates_each_value() -> None:
    data = jpeg(noise().convert("L"))
    rgb = np.asarray(decode(data)).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert np.array_equal(rgb[..., 0], np.asarray(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize(
    ("ink", "rgb"),
    # naive CMYK: each of R, G, B = (255 - its ink) · (255 - black) / 255
    [((0, 255, 255, 0), RED), ((255, 0, 255, 0), GREEN), ((0, 0, 0, 128), (127, 127, 127)), ((0, 0, 0, 0), WHITE)],
)
def test_cmyk_jpeg_close_to_its_rgb(ink: tuple[int, ...], rgb: tuple[int, ...]) -> None:
    img = decode(jpeg(ink, mode="CMYK"))
    assert img.mode == "RGB"
    assert_close(img.getpixel((32, 24)), rgb, archives.JPEG_TOLERANCE)


@pytest.mark.parametrize(
    "data",
    [
        png([0, 1], (20, 10), "P", palette=[(0, 0, 0), BLUE], transparency=0),
        png([(0, 0, 0, 0), (*BLUE, 255)], (20, 10), "RGBA"),
        png([(0, 0), (29, 255)], (20, 10), "LA"),  # 29: the grey of pure blue
        png([(0, 0, 0), BLUE], (20, 10), "RGB", transparency=(0, 0, 0)),  # a colour key (tRNS)
        encode(image([0, 1], (20, 10), "P"), "GIF", transparency=0),
    ],
    ids=["palette", "rgba", "la", "colour-key", "gif"],
)
def test_transparent_pixels_read_white(data: bytes) -> None:
    img = decode(data)
    assert img.mode == "RGB"
    assert img.getpixel((2, 5)) == WHITE  # the left half is transparent and black underneath
    assert img.getpixel((17, 5)) != WHITE


@pytest.mark.parametrize(
    ("orientation", "size", "first", "second", "where"),
    [
        (1, (64, 32), RED, BLUE, ((12, 16), (52, 16))),  # as stored: red left, blue right
        (3, (64, 32), BLUE, RED, ((12, 16), (52, 16))),  # 180°: right and left swap
        (6, (32, 64), RED, BLUE, ((16, 12), (16, 52))),  # 90° clockwise: the left edge goes on top
        (8, (32, 64), BLUE, RED, ((16, 12), (16, 52))),  # 90° anticlockwise: the left edge goes below
    ],
)
def test_exif_orientation(
    orientation: int,
    size: tuple[int, int],
    first: tuple[int, int, int],
    second: tuple[int, int, int],
    where: tuple[tuple[int, int], tuple[int, int]],
) -> None:
    img = decode(jpeg([RED, BLUE], size=(64, 32), exif_orientation=orientation))
    assert img.size == size
    assert_close(img.getpixel(where[0]), first, archives.JPEG_TOLERANCE)
    assert_close(img.getpixel(where[1]), second, archives.JPEG_TOLERANCE)


def test_corrupt_exif_is_ignored_quietly() -> None:
    """An EXIF block that promises more entries than it holds: Pillow warns, the pixels are fine."""
    data = jpeg(RED)
    exif = b"Exif\0\0II*\0\x08\0\0\0\xff\xff" + bytes(10)  # TIFF header, then 65535 entries claimed
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]  # APP1 after SOI
    with pytest.warns(UserWarning, match="EXIF"):
        Image.open(io.BytesIO(data)).getexif()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode(data).size == (64, 48)


# --- rejects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (archives.THUMBS_DB, "not an image"),
        (archives.README, "not an image"),
        (archives.LICENCE_PDF, "not an image"),
        (b"\xff\xd8\xff" + bytes(20), "not an image"),  # a JPEG signature, then nothing Pillow knows
        (jpeg(noise())[:400], "truncated or corrupt"),  # a JPEG cut inside its headers
        (jpeg(noise())[:-2000], "truncated or corrupt"),
        (png(noise())[:-100], "truncated or corrupt"),
    ],
)
def test_rejects(data: bytes, reason: str) -> None:
    assert rejection(data) == reason


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_draft_decoding_still_catches_truncation(cut: float) -> None:
    """At 1/8 scale libjpeg still reads every coefficient, so a cut file fails as at full size."""
    data = jpeg(noise((512, 512)))
    assert decode(data, min_side=32).size == (64, 64)
    assert rejection(data[: int(len(data) * cut)], min_side=32) == "truncated or corrupt"


@pytest.mark.parametrize("limit_of", ["module", "pillow"])
def test_too_large(monkeypatch: pytest.MonkeyPatch, limit_of: str) -> None:
    """1000 pixels allowed: Pillow warns above its limit and raises above twice it; both reject."""
    if limit_of == "module":
        monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    else:  # a lower Pillow limit alone must reject too, its warning included
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for fmt in ("PNG", "JPEG"):
        assert decode(encode(image(RED, (40, 25)), fmt)).size == (40, 25)  # exactly 1000 pixels
        assert rejection(encode(image(RED, (40, 40)), fmt)) == "too large"  # 1600: the warning band
        assert rejection(encode(image(RED, (50, 50)), fmt)) == "too large"  # 2500: the error band


def test_reject_error_reasons() -> None:
    assert RejectError("too large").reason == "too large"
    with pytest.raises(ValueError):
        RejectError("blurry")  # type: ignore[arg-type]


# --- draft decoding, fit, load ----------------------------------------------------------------------


def test_draft_decodes_big_jpegs_smaller() -> None:
    big = jpeg(gradient((800, 600)))
    assert decode(big).size == (800, 600)
    # scale = the largest of 1/8, 1/4, 1/2, 1 keeping both sides ≥ min_side
    assert decode(big, min_side=96).size == (200, 150)  # 1/4; 1/8 would be 75 tall
    assert decode(big, min_side=150).size == (200, 150)
    assert decode(big, min_side=151).size == (400, 300)
    assert decode(big, min_side=600).size == (800, 600)
    assert decode(jpeg(gradient((150, 120))), min_side=96).size == (150, 120)  # under 2×: no gain
    assert decode(png(gradient((800, 600))), min_side=96).size == (800, 600)  # JPEG only
    # reduced in storage, then turned: 800×400 → 200×100 → 100×200
    assert decode(jpeg([RED, BLUE], (800, 400), exif_orientation=6), min_side=96).size == (100, 200)


def test_load_with_draft_matches_full_decode() -> None:
    big = jpeg(gradient((800, 600)))
    drafted = load(big, 96, "crop")
    full = fit(decode(big), 96, "crop")
    assert drafted.shape == full.shape == load(jpeg(gradient((150, 120))), 96, "crop").shape == (3, 96, 96)
    assert np.abs(drafted.astype(int) - full).mean() < 2  # same picture, 0..255 scale


@pytest.mark.parametrize("policy", ["crop", "squash"])
@pytest.mark.parametrize("size", [(300, 100), (100, 300), (50, 50), (20, 10)])
def test_fit_shape(policy: str, size: tuple[int, int]) -> None:
    out = fit(image(RED, size), 32, policy)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out[:, 16, 16] == RED).all()


def test_fit_crop_keeps_the_middle_third() -> None:
    thirds = image([RED, GREEN, BLUE], (300, 100))
    same_size = fit(thirds, 100, "crop")  # no resampling at all: exactly the middle third
    assert (same_size.transpose(1, 2, 0) == GREEN).all()
    smaller = fit(thirds, 30, "crop")  # 1 px from the edges bicubic still sees the neighbours
    assert (smaller[:, :, 2:-2].transpose(1, 2, 0) == GREEN).all()


def test_fit_squash_keeps_all_three() -> None:
    out = fit(image([RED, GREEN, BLUE], (300, 100)), 30, "squash")
    assert [tuple(out[:, 15, x]) for x in (5, 15, 25)] == [RED, GREEN, BLUE]


def test_fit_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="policy"):
        fit(image(RED), 32, "stretch")
    with pytest.raises(ValueError, match="RGB"):
        fit(image(77, mode="L"), 32, "crop")


@pytest.mark.parametrize("policy", ["crop", "squash"])
def test_load_is_deterministic(policy: str) -> None:
    data = jpeg(noise((300, 200)))
    first, second = load(data, 64, policy), load(data, 64, policy)
    assert first.shape == (3, 64, 64) and np.array_equal(first, second)


def test_load_rejects_like_decode() -> None:
    with pytest.raises(RejectError, match="empty file"):
        load(b"", 32, "crop")


# --- the real photos, when present ------------------------------------------------------------------


def test_real_sample_all_labelled_and_decodable(sample_archive: Path) -> None:
    with Archive(sample_archive) as archive:
        names = archive.names()
        labels = [label_of(name) for name in names]
        assert None not in labels and set(labels) == {0, 1}
        for name in names:
            assert load(archive.read(name), 64, "crop").shape == (3, 64, 64), name
