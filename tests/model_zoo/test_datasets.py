"""model_zoo.datasets on the bundled sample: item contents against the CSV read independently,
the image reader, DataLoader collation, transforms, flips, and a missing image."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from model_zoo.data import ImageError  # noqa: E402
from model_zoo.datasets import PSC6KPairs, PSC6KTrainPairs  # noqa: E402
from psc6k.data import sample_path  # noqa: E402
from psc6k.images import read_image  # noqa: E402

S = sample_path()


def csv_keypoints(row, x, y):
    return np.stack([np.array(row[x].split(";"), float), np.array(row[y].split(";"), float)], axis=-1)


def test_items_match_the_csv_and_the_one_reader():
    ds = PSC6KPairs(S / "test_pairs_ps.csv", S)
    df = pd.read_csv(S / "test_pairs_ps.csv")
    assert len(ds) == len(df) == 40
    for i in (0, 17, 39):
        item, row = ds[i], df.iloc[i]
        assert item["photo"].shape == item["sketch"].shape == (3, 256, 256)
        assert item["photo"].dtype == torch.float32 and 0 <= item["photo"].min() and item["photo"].max() <= 1
        assert item["photo_path"] == row["photo"] and item["sketch_path"] == row["sketch"]
        assert item["category"] == row["photo"].split("/")[-2]
        np.testing.assert_allclose(item["photo_keypoints"].numpy(), csv_keypoints(row, "XA", "YA"), rtol=1e-6)
        np.testing.assert_allclose(item["sketch_keypoints"].numpy(), csv_keypoints(row, "XB", "YB"), rtol=1e-6)
        pixels = read_image(S, row["photo"], "rgb")
        np.testing.assert_allclose(item["photo"].permute(1, 2, 0).numpy() * 255, pixels, atol=1e-3)


def test_dataloader_collates_a_batch():
    batch = next(iter(DataLoader(PSC6KPairs(S / "test_pairs_ps.csv", S), batch_size=4)))
    assert batch["photo"].shape == (4, 3, 256, 256) and batch["sketch"].shape == (4, 3, 256, 256)
    assert batch["photo_keypoints"].shape == (4, 8, 2) and batch["sketch_keypoints"].dtype == torch.float32
    assert len(batch["category"]) == 4 and isinstance(batch["photo_path"][0], str)
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_transform_sees_the_whole_item():
    def halve(item):
        item["photo"] = item["photo"][:, ::2, ::2]
        item["photo_keypoints"] = item["photo_keypoints"] / 2
        return item

    plain, small = PSC6KPairs(S / "test_pairs_ps.csv", S)[3], PSC6KPairs(S / "test_pairs_ps.csv", S, halve)[3]
    assert small["photo"].shape == (3, 128, 128)
    assert torch.allclose(small["photo_keypoints"] * 2, plain["photo_keypoints"])


def test_training_rows_carry_flip_and_mirror_both_images():
    ds = PSC6KTrainPairs(S / "train_pairs_ps.csv", S)
    df = pd.read_csv(S / "train_pairs_ps.csv")
    assert len(ds) == len(df)
    assert [(r["photo"], r["sketch"], int(r["flip"])) for _, r in df.iterrows()] == \
        [(p, s, f) for p, s, _, f in ds.rows]
    a, b = ds[0], ds[1]
    assert (a["flip"], b["flip"]) == (0, 1)
    assert torch.equal(b["photo"], a["photo"].flip(-1)) and torch.equal(b["sketch"], a["sketch"].flip(-1))
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert batch["photo"].shape == (6, 3, 256, 256) and batch["flip"].tolist() == [0, 1] * 3


def test_missing_image_is_one_line_naming_the_pair(tmp_path):
    root = tmp_path / "sketchy"
    shutil.copytree(S / "rendered_256x256", root / "rendered_256x256")
    ds = PSC6KPairs(S / "test_pairs_ps.csv", root)
    (root / ds.annotations.photo[2]).unlink()
    with pytest.raises(ImageError, match=r"pair 3: photo=") as info:
        ds[2]
    assert "\n" not in str(info.value)
