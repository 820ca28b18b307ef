"""Captioned image grids: label column, title bar, PNG text metadata; the sample folder's grid layout."""
import numpy as np
import pytest
import torch
from PIL import Image

from rectok_core.sampling.folder import grid_layout
from rectok_core.utils.images import ROWS_KEY, class_caption, grid_captions, save_grid


def _rows(n_rows=3, n=4, size=16):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, size, size, generator=g) * 2 - 1 for _ in range(n_rows)]


def test_captions_add_a_label_column_and_a_title_bar(tmp_path):
    rows = _rows()
    plain = save_grid(rows, tmp_path / "plain.png")
    labels = save_grid(rows, tmp_path / "labels.png", row_labels=["original", "raw", "EMA"])
    both = save_grid(rows, tmp_path / "both.png", row_labels=["original", "raw", "EMA"], title="step 7: recon")
    with Image.open(plain) as a, Image.open(labels) as b, Image.open(both) as c:
        tiles = np.array(a)
        # 16 px images are shown 8x larger: 4 tiles of 16 + 2 px padding, 3 rows
        assert a.size == (8 * (4 * 18 + 2), 8 * (3 * 18 + 2))
        assert b.height == a.height and b.width > a.width  # the label column only widens
        assert c.width == b.width and c.height > b.height  # the title bar only heightens
        col, bar = b.width - a.width, c.height - b.height
        # the tiles are pasted unchanged to the right of the labels and below the title
        assert np.array_equal(np.array(b)[:, col:], tiles)
        assert np.array_equal(np.array(c)[bar:, col:], tiles)
        # the captions are drawn: dark pixels in the label column and in the title bar, white elsewhere
        assert (np.array(b)[:, :col] < 128).any() and (np.array(c)[:bar] < 128).any()
        assert a.text.get(ROWS_KEY) is None
    assert grid_captions(both) == {"title": "step 7: recon", "rows": ["original", "raw", "EMA"]}
    assert grid_captions(plain) == {"title": None, "rows": None}


def test_longer_labels_make_a_wider_column(tmp_path):
    rows = _rows(2)
    short = save_grid(rows, tmp_path / "s.png", row_labels=["a", "b"])
    long = save_grid(rows, tmp_path / "l.png", row_labels=["a", "a much longer caption"])
    with Image.open(short) as s, Image.open(long) as l:
        assert l.width > s.width and l.height == s.height


def test_label_count_must_match_rows(tmp_path):
    with pytest.raises(ValueError, match="2 row labels for 3 rows"):
        save_grid(_rows(), tmp_path / "x.png", row_labels=["a", "b"])


def test_class_caption():
    assert class_caption(3) == "class 3"
    assert class_caption(1, ["cat", "dog"]) == "class 1: dog"
    assert class_caption(0, ["n" * 40], width=10) == "class 0: nnnnnnn..."


def test_sample_grid_layout_is_one_class_per_row():
    # labels are i mod K: row c holds the samples c, c+K, c+2K, ... of class c
    assert grid_layout(20, 10) == [[c, c + 10] for c in range(8)]
    assert grid_layout(100, 3) == [[c + 3 * j for j in range(8)] for c in range(3)]
    # the last shown class has fewer samples: every row is cut to its length (rows of equal width)
    assert grid_layout(13, 5) == [[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]]
    assert grid_layout(4, 1000) == [[0], [1], [2], [3]]
    for n, K in [(64, 8), (50, 7), (1000, 1000)]:
        for row in grid_layout(n, K):
            assert len({i % K for i in row}) == 1 and all(i < n for i in row)
