"""The one layout system: a replay's named regions, computed from the pool's size, run top to
bottom inside the frame; a region's cells and bands land where their sizes say."""

from __future__ import annotations

import pytest

pytest.importorskip("manim")

from manim import config  # noqa: E402

from scenes.framework.kit.layout import Region, make_layout  # noqa: E402

ORDER = ("header", "caption", "detail", "status", "pool", "tables", "code")


@pytest.mark.parametrize("n_pages", [3, 16, 32, 33, 64])
def test_replay_regions_run_top_to_bottom_inside_the_frame(n_pages):
    lay = make_layout(n_pages)
    regions = lay.regions
    assert set(ORDER) <= set(regions)
    half_w, half_h = config.frame_width / 2, config.frame_height / 2
    for name in ORDER:
        r = regions[name]
        assert -half_w <= r.left < r.right <= half_w, name
        assert -half_h <= r.bottom <= r.top <= half_h, name
    for upper, lower in zip(ORDER, ORDER[1:]):
        assert regions[upper].bottom >= regions[lower].top, (upper, lower)
    # every page's frame sits inside the pool region, every arrow ends above the tables
    pool = regions["pool"]
    for page in range(n_pages):
        assert pool.left < lay.page_x(page) < pool.right
        assert lay.arrow_end_y(page) > regions["tables"].top


def test_cells_and_bands_land_where_their_sizes_say():
    r = Region(-2.0, 2.0, 1.0, -1.0)
    assert list(r.cell(0, 0, 0.5, 0.25)) == [-1.75, 0.875, 0.0]
    assert list(r.cell(3, 1, 0.5, 0.25)) == [-0.25, 0.625, 0.0]
    bands = r.stack([("a", 0.5, 0.25), ("b", 1.0, 0.25)])
    assert (bands["a"].top, bands["a"].bottom, bands["b"].top, bands["b"].bottom) == \
        (0.75, 0.25, 0.0, -1.0)
    with pytest.raises(ValueError, match="past the region's bottom"):
        r.stack([("a", 2.5, 0.0)])
    left, right = r.columns(1.0, None, gap=0.5)
    assert (left.left, left.right, right.left, right.right) == (-2.0, -1.0, -0.5, 2.0)
