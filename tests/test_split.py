"""Lesion-grouped split: no lesion in two splits, deterministic, duplicates kept together."""

from collections import Counter

import pytest

from core.data.ham10000 import Record, content_duplicate_groups, load_ham10000
from core.data.split import lesion_grouped_split, split_fingerprint


def _lesions(records, ids):
    lesion = {r.image_id: r.lesion_id for r in records}
    return {lesion[i] for i in ids}


def assert_no_leak(records, split):
    train, val, test = (_lesions(records, split[k]) for k in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    all_ids = split["train"] + split["val"] + split["test"]
    assert sorted(all_ids) == sorted(r.image_id for r in records)  # every image exactly once


def test_fixture_split_has_no_leak_and_is_deterministic(tiny_data):
    records = load_ham10000(tiny_data)
    a = lesion_grouped_split(records, seed=3)
    b = lesion_grouped_split(records, seed=3)
    assert a == b and split_fingerprint(a) == split_fingerprint(b)
    assert_no_leak(records, a)
    assert lesion_grouped_split(records, seed=4) != a


def test_multi_image_lesions_stay_together(tmp_path):
    records = [Record(f"img{i}", f"les{i // 3}", "nv" if i % 2 else "mel", tmp_path / f"img{i}.jpg") for i in range(90)]
    split = lesion_grouped_split(records, seed=0)
    assert_no_leak(records, split)
    for lesion in {r.lesion_id for r in records}:
        homes = {k for k in ("train", "val", "test") for r in records if r.lesion_id == lesion and r.image_id in split[k]}
        assert len(homes) == 1


def test_byte_identical_images_of_different_lesions_stay_together(tmp_path):
    records = []
    for i in range(60):
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(b"same" if i in (0, 59) else f"image {i}".encode())
        records.append(Record(f"img{i}", f"les{i}", ("nv", "mel", "bkl")[i % 3], path))
    duplicates = content_duplicate_groups(records)
    assert duplicates == {"img59": "img0"}
    split = lesion_grouped_split(records, seed=1, duplicate_of=duplicates)
    assert [k for k in ("train", "val", "test") if "img0" in split[k]] == [k for k in ("train", "val", "test") if "img59" in split[k]]


def test_full_ham10000_split(ham10000_dir):
    records = load_ham10000(ham10000_dir)
    split = lesion_grouped_split(records, seed=42, duplicate_of=content_duplicate_groups(records))
    assert_no_leak(records, split)
    dx = {r.image_id: r.dx for r in records}
    overall = Counter(r.dx for r in records)
    for part in ("train", "val", "test"):
        counts = Counter(dx[i] for i in split[part])
        for c, n in overall.items():  # class proportions kept within 2 points
            assert counts[c] / len(split[part]) == pytest.approx(n / len(records), abs=0.02)
    assert len(split["test"]) == pytest.approx(0.15 * len(records), rel=0.1)
