import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraypipe.preprocess import (ImageDecodeError, build_cache, load_cache_index, load_cache_split, load_image)


def test_real_rgba_nih_image(shared_data):
    path = shared_data / "nih" / "images" / "00000004_000.png"
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        reference = np.asarray(im.convert("RGB").convert("L"))
    out = load_image(path, 1024)
    assert out.dtype == np.uint8 and out.shape == (1024, 1024)
    # alpha is opaque in the real file: gray equals the RGB luminance
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1
    small = load_image(path, 64)
    assert small.shape == (64, 64) and 20 < small.mean() < 235


def test_real_gray_nih_image(shared_data):
    path = shared_data / "nih" / "images" / "00000001_000.png"
    with Image.open(path) as im:
        assert im.mode == "L"
        ref = np.asarray(im.resize((128, 128), Image.Resampling.BILINEAR, reducing_gap=2.0))
    np.testing.assert_array_equal(load_image(path, 128), ref)


def test_16bit_uses_the_full_range(tmp_path):
    arr = np.linspace(100, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12 bits used, as in many radiographs
    path = tmp_path / "x16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out = load_image(path, 64)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone mapping


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "1", "F"])
def test_every_mode_becomes_uint8_gray(tmp_path, mode):
    base = Image.fromarray((np.arange(32 * 48).reshape(32, 48) % 256).astype(np.uint8))
    image = base.convert(mode)
    suffix = ".tiff" if mode == "F" else ".png"
    path = tmp_path / f"x{suffix}"
    image.save(path)
    out = load_image(path, 16)
    assert out.dtype == np.uint8 and out.shape == (16, 16)


def test_resize_modes_keep_aspect(tmp_path):
    wide = np.zeros((50, 100), dtype=np.uint8)
    wide[:, 25:75] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    padded = load_image(path, 20, "pad")
    assert padded[:4].max() == 0 and padded[10, 10] == 255  # letterboxed: black bars top/bottom
    cropped = load_image(path, 20, "crop")
    assert cropped.min() > 200  # centre 50x50 is all white
    stretched = load_image(path, 20, "stretch")
    assert stretched[10, 2] == 0 and stretched[10, 10] == 255


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "00000099_000.png"
    good = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    good.save(bad)
    bad.write_bytes(bad.read_bytes()[:400])  # truncated PNG
    with pytest.raises(ImageDecodeError, match=r"00000099_000.png: cannot decode image"):
        load_image(bad, 16)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match=r"junk.png: cannot decode image"):
        load_image(junk, 16)
    with pytest.raises(ImageDecodeError, match=r"nope.png: image file not found"):
        load_image(tmp_path / "nope.png", 16)


def _write_images(tmp_path, n):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        p = tmp_path / f"{i:08d}_000.png"
        Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(p)
        rows.append({"image_id": p.name, "path": str(p), "patient_id": str(i), "follow_up": 0, "view": "PA",
                     "sex": "M", "age": 50.0, "official_split": "", "Mass": float(i % 2),
                     "split": ["train", "val", "test"][i % 3]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("threads", [1, 2])
def test_build_cache_roundtrip(tmp_path, threads):
    manifest = _write_images(tmp_path, 30)
    index = build_cache(manifest, tmp_path / "cache", image_size=24, threads=threads, progress=False)
    assert len(index) == 30
    for split in ("train", "val", "test"):
        arr = load_cache_split(tmp_path / "cache", split)
        assert isinstance(arr, np.memmap) and arr.dtype == np.uint8 and arr.shape == (10, 24, 24)
        part = index[index["split"] == split]
        for _, row in part.iterrows():
            np.testing.assert_array_equal(arr[row["cache_row"]], load_image(row["path"], 24))
    assert load_cache_index(tmp_path / "cache")["image_id"].tolist() == index["image_id"].tolist()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_build_cache_failure_leaves_no_partial_array(tmp_path):
    manifest = _write_images(tmp_path, 12)
    broken = manifest.loc[manifest["split"] == "val", "path"].iloc[1]
    open(broken, "wb").write(b"garbage")
    with pytest.raises(ImageDecodeError, match=broken.split("/")[-1]):
        build_cache(manifest, tmp_path / "cache", image_size=8, threads=2, progress=False)
    leftovers = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert leftovers == ["train.npy"]  # the completed split only; no half-written val.npy, no temp file, no index


def _reference_gray(image: Image.Image) -> np.ndarray:
    """The general conversion path, written out: composite on opaque black, then ITU-R 601 luminance."""
    if image.mode == "L":
        return np.array(image)
    rgba = image.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return np.array(Image.alpha_composite(black, rgba).convert("L"))


@pytest.mark.parametrize("size,how", [(224, "pad"), (97, "crop"), (300, "stretch")])
def test_fast_paths_write_the_same_bytes(shared_data, tmp_path, size, how):
    """load_image's shortcuts (mode L resized without a numpy round trip, opaque RGBA without compositing) give
    exactly the bytes of the general path, on the real NIH files (one is RGBA) and on non-square crops of them."""
    from xraypipe.preprocess import resize_square

    paths = sorted((shared_data / "nih" / "images").glob("*.png"))[:6] + [shared_data / "nih" / "images" / "00000004_000.png"]
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            im.load()
            variants = {"full": im.copy(), "wide": im.crop((0, 100, 1024, 700 + i))}
        for name, image in variants.items():
            file = tmp_path / f"{path.stem}_{name}.png"
            image.save(file)
            expected = resize_square(_reference_gray(image), size, how)
            got = load_image(file, size, how)
            assert got.dtype == np.uint8 and got.shape == (size, size)
            np.testing.assert_array_equal(got, expected, err_msg=f"{file.name} {how}")


def test_translucent_rgba_is_still_composited_on_black(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 128  # half transparent: over black, the gray is about half of 200
    path = tmp_path / "translucent.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = load_image(path, 8, "stretch")
    assert np.all(np.abs(out.astype(int) - 100) <= 1), out


def test_unknown_resize_mode_is_a_value_error_not_a_decode_error(shared_data):
    with pytest.raises(ValueError, match="unknown resize mode 'squash'") as info:
        load_image(shared_data / "nih" / "images" / "00000001_000.png", 64, "squash")
    assert not isinstance(info.value, ImageDecodeError)


def test_pool_workers_write_the_memory_map_and_skip_unreadable_rows(tmp_path):
    """threads > 1: forked workers write their rows straight into the output memory map; an unreadable file under
    unreadable="skip" is left out and the remaining rows are exactly the single-process decode."""
    import xraypipe.preprocess as preprocess

    manifest = _write_images(tmp_path, 30)
    broken = manifest.loc[manifest["split"] == "train", "path"].iloc[3]
    open(broken, "wb").write(b"garbage")
    index = build_cache(manifest, tmp_path / "cache", image_size=16, threads=2, progress=False, unreadable="skip")
    assert broken not in set(index["path"]) and len(index) == 29
    skipped = pd.read_csv(tmp_path / "cache" / "skipped.csv")
    assert skipped["path"].tolist() == [broken] and "cannot decode" in skipped["error"].iloc[0]
    for split in ("train", "val", "test"):
        arr = load_cache_split(tmp_path / "cache", split)
        for _, row in index[index["split"] == split].iterrows():
            np.testing.assert_array_equal(arr[row["cache_row"]], load_image(row["path"], 16))
    assert preprocess._SHARED_OUT is None  # released after the pool
