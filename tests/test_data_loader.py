"""iterate_batches, channel_stats and ImageSet.subset over in-memory sets."""

from __future__ import annotations

import pytest
import torch

from cnnkit.data import ImageSet, channel_stats, iterate_batches, num_batches


def indexed_set(n: int = 23) -> ImageSet:
    """Image i has every pixel equal to i (mod 256) and label i, so batches reveal indices."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 5)
    return ImageSet(images.contiguous(), torch.arange(n), ["x"], None)


def epoch(data, **kw):
    batches = list(iterate_batches(data, 5, **kw))
    for images, labels in batches:
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert (images[:, 0, 0, 0].long() == labels).all()  # images and labels stay paired
    return batches


def test_shuffled_epoch_covers_every_index_once():
    data = indexed_set()
    batches = epoch(data, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert seen.tolist() != list(range(23))


def test_same_seed_same_order_and_resume():
    data = indexed_set()
    a = torch.cat(
        [b[1] for b in epoch(data, shuffle=True, generator=torch.Generator().manual_seed(7))]
    )
    b = torch.cat(
        [b[1] for b in epoch(data, shuffle=True, generator=torch.Generator().manual_seed(7))]
    )
    c = torch.cat(
        [b[1] for b in epoch(data, shuffle=True, generator=torch.Generator().manual_seed(8))]
    )
    assert a.tolist() == b.tolist() != c.tolist()
    # A restored generator state reproduces the next epoch (what resuming a run relies on).
    g = torch.Generator().manual_seed(1)
    epoch(data, shuffle=True, generator=g)
    state = g.get_state()
    second = torch.cat([b[1] for b in epoch(data, shuffle=True, generator=g)])
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.cat([b[1] for b in epoch(data, shuffle=True, generator=g2)]).equal(second)


def test_drop_last_and_unshuffled_order():
    data = indexed_set()
    batches = epoch(data, shuffle=True, generator=torch.Generator().manual_seed(0), drop_last=True)
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5] == [5] * num_batches(23, 5, True)
    assert len(set(torch.cat([b[1] for b in batches]).tolist())) == 20
    plain = epoch(data, shuffle=False)
    assert torch.cat([b[1] for b in plain]).tolist() == list(range(23))
    assert len(plain) == num_batches(23, 5)


def test_device_copy_is_made_once():
    data = indexed_set()
    images, _ = next(iterate_batches(data, 4, shuffle=False, device="cpu"))
    assert images.data_ptr() == data.images.data_ptr()  # cpu: views, no copy
    if torch.cuda.is_available():
        list(iterate_batches(data, 4, shuffle=True, device="cuda"))
        list(iterate_batches(data, 4, shuffle=True, device="cuda"))
        assert len(data._on_device) == 1


def test_channel_stats_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 6, 7), dtype=torch.uint8, generator=g)
    images[:, 2] = 255
    data = ImageSet(images, torch.zeros(50, dtype=torch.int64), ["x"])
    mean, std = channel_stats(data, chunk=7)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    assert mean[2] == pytest.approx(1.0) and std[2] == pytest.approx(0.0, abs=1e-6)


def test_subset():
    data = ImageSet(indexed_set(6).images, torch.arange(6), ["x"], [f"{i}.png" for i in range(6)])
    sub = data.subset([4, 1])
    assert sub.labels.tolist() == [4, 1] and sub.paths == ["4.png", "1.png"] and len(sub) == 2
    assert sub.images[:, 0, 0, 0].tolist() == [4, 1]
    assert data.subset(slice(0, 3)).labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2), ["x"])


def test_indices_name_the_images_of_each_batch():
    data = indexed_set()
    for shuffle in (True, False):
        batches = list(
            iterate_batches(
                data,
                5,
                shuffle=shuffle,
                generator=torch.Generator().manual_seed(1),
                with_indices=True,
            )
        )
        for images, labels, indices in batches:
            assert indices.device.type == "cpu" and indices.dtype == torch.int64
            assert torch.equal(images[:, 0, 0, 0].long(), indices)  # image i has pixels i
            assert torch.equal(labels, indices)
        assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(23))
