"""Neighbour mixing: a split space scores near 0 and a shared one near 1, the same on every
call, and the report warns about the split one only."""

import numpy as np
import pytest

from llmhni_local.core.errors import DataError, UserError
from llmhni_local.eval.mixing import SPLIT_BELOW, neighbour_mixing, other_side_share, split_apart
from llmhni_local.report import alignment
from llmhni_local.report.alignment import alignment_section


def _clouds(apart: float, n_users=120, n_items=200, dim=16, seed=0):
    """Users and items from unit Gaussians whose centres are ``apart`` standard deviations
    apart."""
    rng = np.random.default_rng(seed)
    shift = np.zeros(dim)
    shift[0] = apart / 2
    return rng.normal(size=(n_users, dim)) + shift, rng.normal(size=(n_items, dim)) - shift


def test_split_and_shared_clouds_fall_on_either_side_of_the_threshold():
    split, shared = neighbour_mixing(*_clouds(20.0)), neighbour_mixing(*_clouds(0.0))
    assert split["mixing"] == 0.0 and split_apart(split["mixing"])
    assert shared["mixing"] == pytest.approx(1.0, abs=0.1) and not split_apart(shared["mixing"])
    # uniform mixing: a user's neighbours are items at the pool's item share
    assert shared["user_side_expected"] == pytest.approx(200 / 319)
    assert shared["item_side_expected"] == pytest.approx(120 / 319)
    assert shared["user_side"] == pytest.approx(200 / 319, abs=0.07)
    between = neighbour_mixing(*_clouds(3.0))["mixing"]
    assert split["mixing"] < between < shared["mixing"]


def test_other_side_share_by_hand():
    # u0's two nearest: u1 and i0; u1's: u0, i0; i0's: u1, u0; i1 (far off): i0, u1
    v = np.array([[1.0, 0.0], [1.0, 0.2], [1.0, 0.45], [0.0, 1.0]])
    share = other_side_share(v, np.array([False, False, True, True]), k=2)
    assert share.tolist() == [0.5, 0.5, 1.0, 0.5]


def test_seeded_and_sampled():
    users, items = _clouds(2.0, n_users=300, n_items=500)
    a = neighbour_mixing(users, items, max_per_side=100, seed=3)
    assert (a["users"], a["items"]) == (100, 100)
    assert a == neighbour_mixing(users, items, max_per_side=100, seed=3)
    assert a != neighbour_mixing(users, items, max_per_side=100, seed=4)  # another sample
    whole = neighbour_mixing(users, items)
    assert (whole["users"], whole["items"]) == (300, 500)
    assert a["mixing"] == pytest.approx(whole["mixing"], abs=0.2)  # normalised: same meaning


def test_bad_vectors_are_refused():
    with pytest.raises(DataError, match="same width"):
        neighbour_mixing(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DataError, match="too few"):
        neighbour_mixing(np.ones((3, 2)), np.ones((3, 2)), k=10)
    with pytest.raises(DataError, match="non-finite"):
        neighbour_mixing(np.full((5, 2), np.nan), np.ones((5, 2)))


def _align_folder(run, raw, aligned):
    (run / "align").mkdir(parents=True)
    (run / "plots").mkdir()
    for name, (u, i) in (("raw", raw), ("aligned", aligned)):
        np.savez(run / "align" / f"{name}.npz", users=u, items=i)


@pytest.mark.parametrize("apart, warned", [(20.0, True), (0.0, False)])
def test_the_report_warns_only_when_aligned_vectors_stay_apart(tmp_path, monkeypatch, apart,
                                                               warned):
    maps = []
    monkeypatch.setattr(alignment, "plot_alignment_map", lambda *a, **k: maps.append(a))
    _align_folder(tmp_path, _clouds(20.0, 40, 60), _clouds(apart, 40, 60, seed=1))
    lines, out = alignment_section(tmp_path, tmp_path / "plots")
    text = "\n".join(lines)
    assert ("Warning: users and items stay apart after alignment" in text) is warned
    assert out["split"] is warned and out["threshold"] == SPLIT_BELOW
    assert out["raw"]["mixing"] == 0.0 and f"raw text vectors {out['raw']['mixing']:.3f}" in text
    assert len(maps) == 1 and list(maps[0][0]) == ["raw", "aligned"]


def test_the_map_is_drawn(tmp_path):
    _align_folder(tmp_path, _clouds(20.0, 40, 60), _clouds(0.0, 40, 60, seed=1))
    lines, _ = alignment_section(tmp_path, tmp_path / "plots")
    assert "![alignment map](plots/alignment_map.png)" in lines
    assert (tmp_path / "plots" / "alignment_map.png").stat().st_size > 0


def test_no_align_folder_no_section_and_a_torn_file_named(tmp_path):
    assert alignment_section(tmp_path, tmp_path) == ([], {})
    _align_folder(tmp_path, _clouds(0.0, 10, 10), _clouds(0.0, 10, 10))
    (tmp_path / "align" / "aligned.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(UserError, match=r"aligned\.npz: cannot read arrays"):
        alignment_section(tmp_path, tmp_path / "plots")
    np.savez(tmp_path / "align" / "aligned.npz", users=np.ones((11, 4)), items=np.ones((10, 4)))
    with pytest.raises(UserError, match=r"aligned\.npz: \(11, 10\) users and items"):
        alignment_section(tmp_path, tmp_path / "plots")
