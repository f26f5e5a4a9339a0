"""Box-aware augmentation (boxes follow the pixels, seeded replay) and letterbox batching."""

from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.augment import (
    PAD_VALUE,
    DetectAugment,
    augment_batch,
    augment_sample,
)
from cnnkit.tasks.detect.batch import resize_batch
from cnnkit.tasks.detect.dataset import BoxTarget


def rectangle_image(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Black uint8 (3, H, W) with the box's pixels white."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image


def find_rectangle(image: torch.Tensor) -> list[int] | None:
    """x1 y1 x2 y2 of the bright pixels (above the grey padding), or None if there are none."""
    ys, xs = torch.nonzero(image[0] > (255 + PAD_VALUE) // 2, as_tuple=True)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- augmentation


def test_flip_moves_boxes_to_exact_mirrored_coordinates():
    image = rectangle_image(30, 50, (5, 4, 20, 12))
    target = BoxTarget([[5, 4, 20, 12], [40, 0, 50, 30]], [3, 1], [False, True])
    out, moved = augment_sample(image, target, gen(0), DetectAugment(flip=1.0))
    assert torch.equal(out, image.flip(-1))
    assert moved.boxes.tolist() == [[30, 4, 45, 12], [0, 0, 10, 30]]
    assert moved.labels.tolist() == [3, 1] and moved.iscrowd.tolist() == [False, True]
    assert find_rectangle(out) == [30, 4, 45, 12]


def test_zoom_and_shift_boxes_follow_the_pixels():
    box = (18, 12, 38, 30)
    image = rectangle_image(48, 64, box)
    settings = DetectAugment(scale=(0.5, 1.5), translate=0.2)
    moved_any = 0
    for seed in range(12):
        out, moved = augment_sample(image, BoxTarget([box], [0]), gen(seed), settings)
        assert out.shape == image.shape and out.dtype == torch.uint8
        found = find_rectangle(out)
        if found is None or min(found[2] - found[0], found[3] - found[1]) < 2:
            assert len(moved) == 0 or (moved.boxes[0, 2:] - moved.boxes[0, :2]).min() < 3
            continue
        assert len(moved) == 1
        # bilinear resampling blurs the border by up to a pixel
        assert torch.allclose(moved.boxes[0], torch.tensor(found, dtype=torch.float32), atol=1.0)
        moved_any += found != list(box)
    assert moved_any >= 8  # the transform really moved the box in most draws


def test_boxes_cropped_away_are_dropped_with_their_labels_and_crowd_flags():
    # a 1.5x zoom about the centre of a 40 x 40 image keeps (10..30) -> (5..35) and pushes the
    # corner box (0..6) to (-10..-1): outside, so dropped; the labels follow their boxes
    image = rectangle_image(40, 40, (10, 10, 30, 30))
    target = BoxTarget([[0, 0, 6, 6], [10, 10, 30, 30]], [4, 7], [True, False])
    out, moved = augment_sample(image, target, gen(1), DetectAugment(scale=(1.5, 1.5)))
    assert moved.labels.tolist() == [7] and moved.iscrowd.tolist() == [False]
    torch.testing.assert_close(
        moved.boxes, torch.tensor([[5.0, 5.0, 35.0, 35.0]]), atol=0.5, rtol=0
    )
    assert find_rectangle(out) == [5, 5, 35, 35]


def test_same_generator_state_replays_and_global_rng_is_untouched():
    image = rectangle_image(40, 56, (8, 6, 30, 28))
    target = BoxTarget([[8, 6, 30, 28], [40, 20, 56, 40]], [0, 1])
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = augment_sample(image, target, gen(7), "standard")
    again = augment_sample(image, target, gen(7), "standard")
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1].boxes, again[1].boxes)
    assert torch.equal(first[1].labels, again[1].labels)
    others = [augment_sample(image, target, gen(s), "standard")[0] for s in range(8, 12)]
    assert any(not torch.equal(first[0], o) for o in others)


def test_batch_helper_draws_from_one_generator_in_order():
    images = [rectangle_image(20, 24, (2, 2, 10, 10)), rectangle_image(16, 16, (4, 4, 8, 8))]
    targets = [BoxTarget([[2, 2, 10, 10]], [0]), BoxTarget(torch.zeros(0, 4), [])]
    g = gen(3)
    expected = [augment_sample(i, t, g, "standard") for i, t in zip(images, targets, strict=True)]
    out_images, out_targets = augment_batch(images, targets, gen(3), "standard")
    for (image, target), got_image, got_target in zip(
        expected, out_images, out_targets, strict=True
    ):
        assert torch.equal(image, got_image) and torch.equal(target.boxes, got_target.boxes)
    assert len(out_targets[1]) == 0  # a background image stays one


def test_presets_and_bad_settings():
    assert DetectAugment.preset("none").is_identity
    assert DetectAugment.preset("basic") == DetectAugment(flip=0.5)
    assert DetectAugment.preset("standard").scale == (0.5, 1.5)
    image = rectangle_image(8, 8, (1, 1, 4, 4))
    target = BoxTarget([[1, 1, 4, 4]], [0])
    assert augment_sample(image, target, gen(0), "none")[0] is image
    with pytest.raises(CnnkitError, match="did you mean 'standard'"):
        DetectAugment.preset("standart")
    with pytest.raises(CnnkitError, match="scale"):
        DetectAugment(scale=(2.0, 1.0))


# ---------------------------------------------------------------- batching


def test_letterbox_maps_a_known_box_and_back_to_the_original_pixels():
    # stored 50 x 100 (H x W), itself shrunk by 2 from a 100 x 200 file; letterbox to 64:
    # scale 0.64 -> 32 x 64 placed at pad_y = 16
    image = rectangle_image(50, 100, (25, 10, 75, 35))
    target = BoxTarget([[25, 10, 75, 35]], [2])
    batch = resize_batch([image], [target], 64, original_sizes=[(100, 200)])
    assert batch.images.shape == (1, 3, 64, 64) and batch.images.dtype == torch.uint8
    assert batch.scales == [(0.64, 0.64)] and batch.pads == [(0, 16)]
    expected = torch.tensor([[16.0, 22.4, 48.0, 38.4]])
    torch.testing.assert_close(batch.targets[0].boxes, expected)
    found = torch.tensor(find_rectangle(batch.images[0]), dtype=torch.float32)
    assert torch.allclose(found, expected[0], atol=1.0)  # the pixels moved there too
    assert int(batch.images[0, 0, 0, 0]) == PAD_VALUE and int(batch.images[0, 0, 20, 0]) == 0
    torch.testing.assert_close(batch.to_stored(expected, 0), torch.tensor([[25.0, 10, 75, 35]]))
    torch.testing.assert_close(batch.to_original(expected, 0), torch.tensor([[50.0, 20, 150, 70]]))
    # a prediction reaching into the padding is clipped to the original image
    outside = torch.tensor([[-5.0, 0.0, 70.0, 20.0]])
    torch.testing.assert_close(batch.to_original(outside, 0), torch.tensor([[0.0, 0, 200, 12.5]]))


def test_letterbox_batches_images_of_different_shapes():
    images = [rectangle_image(30, 20, (0, 0, 20, 30)), rectangle_image(10, 40, (0, 0, 40, 10))]
    batch = resize_batch(images, None, 40)
    assert batch.images.shape == (2, 3, 40, 40) and batch.targets is None
    assert batch.pads == [(6, 0), (0, 15)]
    assert find_rectangle(batch.images[0]) == [6, 0, 33, 40]
    assert find_rectangle(batch.images[1]) == [0, 15, 40, 25]


def test_shorter_side_mode_caps_the_longer_side():
    images = [rectangle_image(40, 60, (0, 0, 6, 4)), rectangle_image(20, 200, (0, 0, 4, 4))]
    target = BoxTarget([[0, 0, 6, 4]], [0])
    batch = resize_batch(images, [target, BoxTarget(torch.zeros(0, 4), [])], 80, mode="shorter")
    assert isinstance(batch.images, list)
    assert tuple(batch.images[0].shape) == (3, 80, 120)  # shorter side 40 -> 80
    # 20 x 200: 80 on the short side would make 800 > 80 * 1333 / 800 = 133.3 -> capped
    assert tuple(batch.images[1].shape) == (3, 13, 133)
    torch.testing.assert_close(batch.targets[0].boxes, torch.tensor([[0.0, 0.0, 12.0, 8.0]]))
    back = batch.to_original(batch.targets[0].boxes, 0)
    torch.testing.assert_close(back, torch.tensor([[0.0, 0.0, 6.0, 4.0]]))
