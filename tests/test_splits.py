"""Split files: a ``val`` list held out of the labeled training cases — disjoint from ``test``, from
every few-shot set and from "Full" — or the data's own; a split whose val and test share a case is
refused; ``python -m gemini_pl.data.splits --num-val``."""

from __future__ import annotations

import pytest

from gemini_pl.data.splits import describe_split, few_shot, load_split, make_split, write_split
from gemini_pl.errors import DataError

LISTING = {
    "train_unlabeled": [f"u{i}.nii.gz" for i in range(4)],
    "train_labeled": [f"l{i:02d}.nii.gz" for i in range(12)],
    "test": [f"t{i}.nii.gz" for i in range(6)],
}


def test_split_from_a_listing_holds_out_val():
    split = make_split("x", LISTING, seed=3, num_val=5)
    val, test = set(split["val"]), set(split["test"])
    assert len(val) == 5 and not val & test
    assert not val & set(split["train_labeled"])
    assert sorted(split["train_labeled"] + split["val"]) == sorted(LISTING["train_labeled"])
    assert split["few_shot"] and all(not val & set(names) for names in split["few_shot"].values())
    for k in (1, 3, 5, 7):
        assert not val & set(few_shot(split, k))
    assert not val & set(few_shot(split, None))  # "Full" (num_labeled: null)
    # the same seeded order as without validation: val is its tail, the few-shot sets its head
    plain = make_split("x", LISTING, seed=3, num_val=0)
    assert "val" not in plain and plain["train_labeled"] == split["train_labeled"] + split["val"]
    assert {k: plain["few_shot"][k] for k in ("1", "5")} == split["few_shot"]
    # at least the paper's 5 stay for training: 8 labeled -> 3 validate; 5 -> none
    eight = make_split("x", {**LISTING, "train_labeled": LISTING["train_labeled"][:8]}, num_val=5)
    assert len(eight["val"]) == 3 and len(eight["train_labeled"]) == 5 and not set(eight["val"]) & set(eight["test"])
    five = make_split("x", {**LISTING, "train_labeled": LISTING["train_labeled"][:5]})
    assert "val" not in five and len(five["train_labeled"]) == 5
    # the data's own validation cases (a val/labeled folder, a datalist's validation list) are kept
    own = make_split("x", {**LISTING, "val": ["v1.nii.gz", "v0.nii.gz"]})
    assert own["val"] == ["v0.nii.gz", "v1.nii.gz"] and len(own["train_labeled"]) == 12
    assert describe_split(split, "ab" * 32) == f"sha256 {'ab' * 32} (train 7 labeled + 4 unlabeled / val 5 / test 6)"
    assert describe_split(split, "ab" * 32, num_labeled=5).endswith("(train 5 of 7 labeled + 4 unlabeled / val 5 / test 6)")


def test_val_sharing_a_test_case_is_refused(tmp_path):
    split = make_split("x", LISTING)
    split["val"] = split["val"] + ["t2.nii.gz", "t4.nii.gz"]
    path = tmp_path / "x.json"
    write_split(split, path)
    with pytest.raises(DataError, match=r"val and test share 2 case\(s\): t2.nii.gz, t4.nii.gz") as err:
        load_split(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"val and test share 1 case\(s\): t1.nii.gz"):
        make_split("x", {**LISTING, "val": ["t1.nii.gz"]})


def test_split_files_without_val_still_load(tmp_path):
    split = make_split("x", LISTING, num_val=0)
    path = tmp_path / "old.json"
    write_split(split, path)
    loaded, _ = load_split(path)
    assert "val" not in loaded and loaded["train_labeled"] == split["train_labeled"]
