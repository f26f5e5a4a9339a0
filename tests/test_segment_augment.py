"""Mask-aware augmentation: masks follow the pixels exactly (nearest neighbour, ignore where
uncovered), colour touches only the image, and the same generator state replays."""

from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.augment import PAD_VALUE
from cnnkit.tasks.segment.augment import (
    SegmentAugment,
    augment_batch,
    augment_sample,
    paste_objects,
)
from cnnkit.tasks.segment.dataset import IGNORE_INDEX


def rectangle_mask(height: int, width: int, rects: dict[int, tuple[int, int, int, int]]):
    """(H, W) uint8: 0 with each class's rectangle (x1, y1, x2, y2; x2, y2 exclusive)."""
    mask = torch.zeros(height, width, dtype=torch.uint8)
    for label, (x1, y1, x2, y2) in rects.items():
        mask[y1:y2, x1:x2] = label
    return mask


def image_of(mask: torch.Tensor) -> torch.Tensor:
    """A uint8 (3, H, W) photo whose pixels say their class (class k -> 60 k + 20)."""
    return (mask.long() * 60 + 20).clamp(max=255).to(torch.uint8).expand(3, -1, -1).clone()


def extent(mask: torch.Tensor, label: int) -> list[int] | None:
    """x1 y1 x2 y2 of a class's pixels, or None."""
    ys, xs = torch.nonzero(mask == label, as_tuple=True)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def edges(mask: torch.Tensor) -> torch.Tensor:
    """Pixels with a different value among their 8 neighbours (outside the image: ignore)."""
    m = torch.nn.functional.pad(mask.float()[None, None], (1, 1, 1, 1), value=IGNORE_INDEX)
    high = torch.nn.functional.max_pool2d(m, 3, stride=1)
    low = -torch.nn.functional.max_pool2d(-m, 3, stride=1)
    return (high != low)[0, 0]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MASK = rectangle_mask(40, 40, {1: (8, 10, 20, 30), 2: (24, 4, 36, 12)})


def test_a_flip_mirrors_the_mask_and_two_flips_are_the_identity():
    image = image_of(MASK)
    flip = SegmentAugment(flip=1.0)
    out_image, out_mask = augment_sample(image, MASK, gen(0), flip)
    assert extent(out_mask, 1) == [40 - 20, 10, 40 - 8, 30]
    assert extent(out_mask, 2) == [40 - 36, 4, 40 - 24, 12]
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_mask, MASK.flip(-1))
    back_image, back_mask = augment_sample(out_image, out_mask, gen(1), flip)
    assert torch.equal(back_image, image) and torch.equal(back_mask, MASK)


def test_a_2x_zoom_in_gives_the_predicted_rectangle_by_nearest_neighbour():
    # about the centre (20, 20): x -> 2 (x - 20) + 20, so cols 8..19 -> -4..19 (cropped to 0..19)
    _, zoomed = augment_sample(image_of(MASK), MASK, gen(0), SegmentAugment(scale=(2.0, 2.0)))
    assert extent(zoomed, 1) == [0, 0, 20, 40]
    assert extent(zoomed, 2) == [28, 0, 40, 4]
    expected = rectangle_mask(40, 40, {1: (0, 0, 20, 40), 2: (28, 0, 40, 4)})
    assert torch.equal(zoomed, expected)


def test_a_zoom_out_pads_the_image_grey_and_the_mask_with_ignore():
    image = image_of(MASK)
    out_image, out_mask = augment_sample(image, MASK, gen(0), SegmentAugment(scale=(0.5, 0.5)))
    inside = rectangle_mask(40, 40, {1: (10, 10, 30, 30)}) == 1  # the shrunk image's place
    assert (out_mask[~inside] == IGNORE_INDEX).all() and (out_mask[inside] != IGNORE_INDEX).all()
    assert (out_image[:, ~inside] == PAD_VALUE).all()
    assert extent(out_mask, 1) == [14, 15, 20, 25] and extent(out_mask, 2) == [22, 12, 28, 16]


def test_a_rotation_moves_the_mask_with_the_pixels_and_ignores_the_uncovered_corners():
    image = image_of(MASK)
    turned = 0
    for seed in range(10):
        out_image, out_mask = augment_sample(image, MASK, gen(seed), SegmentAugment(rotation=10))
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}  # no invented values
        labelled = out_mask != IGNORE_INDEX
        says = ((out_image[0].long() - 20 + 30) // 60).clamp(0, 2)  # the class the pixel shows
        disagree = (says != out_mask.long()) & labelled
        assert not (disagree & ~edges(out_mask)).any()  # bilinear blur only along the edges
        if not torch.equal(out_mask, MASK):  # a turn of more than a fraction of a degree
            turned += 1
            corners = out_mask[[0, 0, -1, -1], [0, -1, 0, -1]]
            assert (corners == IGNORE_INDEX).all()  # a turn either way uncovers all four
            assert (out_image[:, ~labelled] != 20).all()  # grey fill, not the background's 20
    assert turned >= 6


def test_colour_jitter_changes_the_image_and_leaves_the_mask_alone():
    image = torch.randint(30, 220, (3, 40, 40), dtype=torch.uint8, generator=gen(5))
    out_image, out_mask = augment_sample(image, MASK, gen(2), SegmentAugment(color_jitter=0.4))
    assert torch.equal(out_mask, MASK) and out_mask.dtype == torch.uint8
    assert not torch.equal(out_image, image) and out_image.dtype == torch.uint8


def test_a_crop_window_is_padded_with_ignore_when_the_image_is_smaller():
    small = rectangle_mask(10, 12, {1: (0, 0, 12, 10)})
    out_image, out_mask = augment_sample(image_of(small), small, gen(0), SegmentAugment(crop=16))
    assert out_image.shape == (3, 16, 16) and out_mask.shape == (16, 16)
    assert (out_mask == 1).sum() == 120 and (out_mask == IGNORE_INDEX).sum() == 256 - 120
    assert ((out_image == PAD_VALUE).all(0) == (out_mask == IGNORE_INDEX)).all()
    out_image, out_mask = augment_sample(image_of(MASK), MASK, gen(0), SegmentAugment(crop=16))
    assert out_mask.shape == (16, 16) and IGNORE_INDEX not in out_mask.unique()


def test_same_generator_state_replays_and_global_rng_is_untouched():
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=gen(9))
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = augment_sample(image, MASK, gen(7), "standard")
    again = augment_sample(image, MASK, gen(7), "standard")
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    others = [augment_sample(image, MASK, gen(s), "standard")[1] for s in range(8, 12)]
    assert any(not torch.equal(first[1], o) for o in others)


def test_batch_helper_draws_from_one_generator_in_order_and_keeps_dtypes():
    images = [image_of(MASK), image_of(MASK[:20, :30])]
    masks = [MASK, MASK[:20, :30].long()]
    g = gen(3)
    expected = [augment_sample(i, m, g, "standard") for i, m in zip(images, masks, strict=True)]
    out_images, out_masks = augment_batch(images, masks, gen(3), "standard")
    for (image, mask), got_image, got_mask in zip(expected, out_images, out_masks, strict=True):
        assert torch.equal(image, got_image) and torch.equal(mask, got_mask)
    assert out_masks[0].dtype == torch.uint8 and out_masks[1].dtype == torch.int64


def test_presets_and_bad_settings():
    assert SegmentAugment.preset("none").is_identity
    assert SegmentAugment.preset("basic") == SegmentAugment(flip=0.5)
    standard = SegmentAugment.preset("standard")
    assert standard.rotation == 10 and standard.scale == (0.5, 2.0)
    described = "flip 0.5, zoom 0.5-2, shift 0.1, rotate 10 deg, colour jitter 0.3"
    assert standard.describe() == described
    image = image_of(MASK)
    same_image, same_mask = augment_sample(image, MASK, gen(0), "none")
    assert same_image is image and same_mask is MASK
    with pytest.raises(CnnkitError, match="did you mean 'standard'"):
        SegmentAugment.preset("standart")
    for bad in ({"scale": (2.0, 1.0)}, {"rotation": -5}, {"crop": 0}, {"flip": 2}):
        with pytest.raises(CnnkitError):
            SegmentAugment(**bad)
    with pytest.raises(ValueError, match="differ in size"):
        augment_sample(image, MASK[:10], gen(0))


def test_copy_paste_lays_the_sources_objects_over_and_keeps_the_rest():
    dest = rectangle_mask(40, 40, {1: (0, 0, 10, 10), 2: (30, 0, 40, 10)})
    source = rectangle_mask(40, 40, {2: (20, 20, 30, 30), 1: (35, 5, 40, 15)})
    source[36:, :20] = IGNORE_INDEX  # a zoom-out's uncovered strip is not an object
    image, mask = paste_objects(image_of(dest), dest, image_of(source), source)
    assert extent(mask, 2) == [20, 0, 40, 30]  # the pasted square, and dest's bar above it
    assert mask[5:15, 35:40].eq(1).all()  # the source's object wins where the two overlap
    assert mask[0:5, 30:35].eq(2).all()  # dest's object outside the source's objects stays
    assert extent(mask, 1) == [0, 0, 40, 15] and not mask.eq(IGNORE_INDEX).any()
    assert torch.equal(image, image_of(mask))  # each pixel came with its class
    with pytest.raises(ValueError, match="one size"):
        paste_objects(image_of(dest), dest, image_of(source)[:, :20], source[:20])
