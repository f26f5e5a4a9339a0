"""BatchAugment, augment presets and the show-batch grid, on real uint8 tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.data.augment import (
    PRESETS,
    AugmentConfig,
    BatchAugment,
    _color_jitter,
    alternating_flips,
    augment_config,
    augment_generator,
)
from cnnkit.data.show import augmented_sample, save_batch_grid, show_batch, target_labels
from cnnkit.demo import sample_images
from cnnkit.errors import CnnkitError
from image_files import make_split

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(b: int = 64, h: int = 32, w: int = 32, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (b,), generator=g)
    return images.to(device), labels.to(device)


def run(cfg: AugmentConfig, images, labels, seed: int = 0, num_classes: int = 10):
    return BatchAugment(cfg, num_classes)(images, labels, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_keep_shape_dtype_device_and_labels(preset, device):
    images, labels = batch(device=device)
    before = images.clone()
    out, targets = run(augment_config(preset), images, labels)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert out.device == images.device and targets.device == images.device
    assert images.equal(before)  # the input batch (maybe a view of the dataset) is untouched
    if PRESETS[preset].soft_targets:
        assert targets.shape == (64, 10) and targets.dtype == torch.float32
        assert torch.allclose(targets.sum(1), torch.ones(64, device=device))
    else:
        assert targets.dtype == torch.int64 and targets.equal(labels)
    if preset != "none":
        assert not out.equal(images)


@pytest.mark.parametrize("preset", ["basic", "standard", "strong"])
def test_same_seed_same_batch_other_seed_other_batch(preset):
    images, labels = batch()
    cfg = augment_config(preset)
    state = torch.get_rng_state()
    a, ta = run(cfg, images, labels, seed=1)
    b, tb = run(cfg, images, labels, seed=1)
    c, _ = run(cfg, images, labels, seed=2)
    assert a.equal(b) and ta.equal(tb)
    assert not a.equal(c)
    assert torch.get_rng_state().equal(state)  # the global RNG is never consumed


def test_all_off_and_zero_jitter_are_identity():
    images, labels = batch()
    cfg = augment_config("basic", flip=False, crop_padding=0, color_jitter=0.0)
    assert cfg.is_identity() and AugmentConfig().is_identity()
    out, targets = run(cfg, images, labels)
    assert out.equal(images) and targets.equal(labels)
    assert not augment_config(color_jitter=0.1).is_identity()
    jittered, _ = run(augment_config(color_jitter=0.1), images, labels)
    assert not jittered.equal(images)


def sample_photos() -> torch.Tensor:
    """Real CIFAR-10 photos from the sample the package ships: 2 per class, (20, 3, 32, 32)."""
    import numpy as np

    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in sample_images(per_class=2)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize(
    "factors", [(1.0, 1.0, 0.5), (1.0, 1.0, 2.0), (1.3, 0.7, 1.6), (0.6, 1.4, 0.2)]
)
def test_color_jitter_matches_torchvision_on_real_photos(factors):
    from torchvision.transforms.v2 import functional as TF

    images = sample_photos()
    bright, contrast, sat = factors
    expected = TF.adjust_saturation(
        TF.adjust_contrast(TF.adjust_brightness(images.float() / 255, bright), contrast), sat
    )
    got = _color_jitter(images.float(), torch.tensor([factors] * len(images)))
    assert torch.allclose(got.clamp(0, 255) / 255, expected, atol=1e-4)


def test_saturation_leaves_grey_images_grey_and_keeps_their_brightness():
    grey = torch.full((4, 3, 8, 8), 100.0)
    factors = torch.tensor([[1.0, 1.0, s] for s in (0.5, 0.8, 1.2, 2.0)])
    # (within rounding: torchvision's grey weights sum to 0.9999)
    assert torch.allclose(_color_jitter(grey.clone(), factors), grey, atol=0.05)


def test_grayscale_turns_the_chosen_share_grey_with_torchvision_luma():
    images, labels = batch(b=200)
    out, _ = run(AugmentConfig(grayscale=1.0), images, labels)
    from torchvision.transforms.v2 import functional as TF

    expected = TF.rgb_to_grayscale(images.float(), num_output_channels=3).round()
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert (out.float() - expected).abs().max() <= 1
    half, _ = run(AugmentConfig(grayscale=0.5), images, labels)
    same = (half[:, 0] == half[:, 1]) & (half[:, 1] == half[:, 2])
    grey = same.flatten(1).all(1)
    assert 60 < int(grey.sum()) < 140  # about half, each either grey or untouched
    assert torch.equal(half[~grey], images[~grey])
    assert AugmentConfig(grayscale=0.3).describe() == "grey 0.3"
    with pytest.raises(CnnkitError, match="grayscale is a probability"):
        AugmentConfig(grayscale=2)


def test_flip_only_gives_input_or_its_mirror_both_occur():
    images, labels = batch()
    out, _ = run(augment_config(flip=True), images, labels)
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


def test_alternating_flips_mirror_a_seeded_half_then_the_other_half():
    first, second, third = (alternating_flips(1000, seed=3, epoch=e) for e in (0, 1, 2))
    assert torch.equal(second, ~first) and torch.equal(third, first)
    assert 400 < int(first.sum()) < 600
    assert torch.equal(first, alternating_flips(1000, seed=3, epoch=0))
    assert not torch.equal(first, alternating_flips(1000, seed=4, epoch=0))


def test_a_given_flip_choice_mirrors_exactly_those_images():
    images, labels = batch(b=8)
    cfg = augment_config(alternating_flip=True, crop_padding=2)
    assert cfg.flip  # implied
    choice = torch.tensor([True, False] * 4)
    g = torch.Generator().manual_seed(0)
    out, _ = BatchAugment(augment_config(alternating_flip=True), 10)(images, labels, g, choice)
    assert torch.equal(out[choice], images[choice].flip(-1))
    assert torch.equal(out[~choice], images[~choice])
    with pytest.raises(ValueError, match="flip must be bool"):
        BatchAugment(cfg, 10)(images, labels, g, choice[:3])


def test_show_batch_mirrors_what_the_first_epoch_of_an_alternating_flip_run_mirrors():
    images, labels = batch(b=40)
    sample, targets = augmented_sample(
        images, labels, augment_config(alternating_flip=True), n=12, seed=7, num_classes=10
    )
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(7))[:12]
    mirrored = alternating_flips(40, seed=7, epoch=0)[idx]  # the trainer's epoch-0 choice
    assert 0 < int(mirrored.sum()) < 12
    expected = torch.where(mirrored[:, None, None, None], images[idx].flip(-1), images[idx])
    assert torch.equal(sample, expected) and torch.equal(targets, labels[idx])


def test_crop_padding_only_is_an_exact_reflect_padded_shift():
    pad = 4
    images, labels = batch(h=24, w=20)
    out, _ = run(augment_config(crop_padding=pad), images, labels, seed=5)
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8)
    shifts = set()
    for i in range(len(images)):
        found = [
            (dy, dx)
            for dy in range(-pad, pad + 1)
            for dx in range(-pad, pad + 1)
            if out[i].equal(padded[i, :, pad - dy : pad - dy + 24, pad - dx : pad - dx + 20])
        ]
        assert len(found) == 1, f"image {i} is not one shifted window: {found}"
        dy, dx = found[0]
        # the centre is the input itself, moved by (dy, dx)
        assert out[i, :, pad:-pad, pad:-pad].equal(
            images[i, :, pad - dy : 24 - pad - dy, pad - dx : 20 - pad - dx]
        )
        shifts.add(found[0])
    assert len(shifts) > 10


def test_affine_path_matches_the_exact_path_inside_the_border():
    """scale=(1, 1) forces the grid_sample path with an identity zoom: the same flips and shifts
    (drawn first from the generator) must give the same pixels away from the padded border."""
    images, labels = batch()
    exact, _ = run(augment_config(flip=True, crop_padding=4), images, labels, seed=3)
    affine, _ = run(
        augment_config(flip=True, crop_padding=4, scale=(1.0, 1.0)), images, labels, seed=3
    )
    assert exact[:, :, 4:-4, 4:-4].equal(affine[:, :, 4:-4, 4:-4])


def test_rotation_and_scale_interpolate_but_keep_the_content():
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 12:20, 12:20] = 200  # a centred square survives a small rotation/zoom
    out, _ = run(augment_config(rotation=15, scale=(0.9, 1.1)), images, torch.zeros(8).long())
    assert not out.equal(images)
    assert (out[:, :, 15:17, 15:17] == 200).all()
    assert (out[:, :, :4, :4] == 0).all()


def test_erasing_always_changes_every_image():
    images, labels = batch()
    out, targets = run(augment_config(erasing=1.0), images, labels)
    changed = (out != images).flatten(1).any(1)
    assert changed.all() and targets.equal(labels)
    fraction = (out != images).any(1).flatten(1).float().mean(1)
    assert fraction.max() <= 0.36  # one rectangle of about 33% at most (sides are rounded)


def unique_label_batch(b: int = 16):
    images, _ = batch(b=b)
    return images, torch.arange(b)


def mixup_lambda(targets: torch.Tensor) -> float:
    """A batch's mixup weight: its rows' own-label weight (rows paired with themselves hold 1)."""
    return float(targets.max(1).values.min())


def test_mixup_lambdas_follow_the_folded_beta_distribution():
    """lambda ~ Beta(alpha, alpha), folded onto [0.5, 1] by max(lam, 1 - lam): over 400 batches
    its mean is the folded mean of numpy's Beta(0.2, 0.2) draws (0.899; a wrong alpha, such as
    1.0, gives 0.75, and no mixing 1.0)."""
    images, labels = unique_label_batch()
    cfg = augment_config(mixup=0.2)
    lams = [mixup_lambda(run(cfg, images, labels, seed=s, num_classes=16)[1]) for s in range(400)]
    draws = np.random.default_rng(0).beta(0.2, 0.2, 1_000_000)
    folded_mean = float(np.maximum(draws, 1 - draws).mean())
    assert np.mean(lams) == pytest.approx(folded_mean, abs=0.03)  # 4 standard errors


def test_mixup_targets_and_pixels_are_convex_combinations():
    images, labels = unique_label_batch()
    for seed in range(5):
        out, targets = run(augment_config(mixup=0.2), images, labels, seed=seed, num_classes=16)
        assert torch.allclose(targets.sum(1), torch.ones(16))
        assert (targets.argmax(1) == labels).float().mean() >= 0.9  # own label dominates
        lam = mixup_lambda(targets)
        for i in range(16):
            row = targets[i].clone()
            row[i] = 0
            j = int(row.argmax()) if row.max() > 0 else i
            expected = (lam * images[i].double() + (1 - lam) * images[j].double()).round()
            assert (out[i].double() - expected).abs().max() <= 1


def test_cutmix_weights_equal_the_pasted_area():
    b = 16
    images = (torch.arange(b) * 15 + 5).to(torch.uint8).view(b, 1, 1, 1).expand(b, 3, 32, 32)
    labels = torch.arange(b)
    pasted_any = False
    for seed in range(8):
        out, targets = run(
            augment_config(cutmix=1.0), images.contiguous(), labels, seed=seed, num_classes=b
        )
        assert torch.allclose(targets.sum(1), torch.ones(b))
        for i in range(b):
            pasted = (out[i] != images[i]).any(0).float().mean()
            if pasted > 0:
                pasted_any = True
                assert float(targets[i, i]) == pytest.approx(1 - float(pasted), abs=1e-6)
                partner = int(out[i, 0][out[i, 0] != images[i, 0, 0, 0]][0]) // 15
                assert float(targets[i, partner]) == pytest.approx(float(pasted), abs=1e-6)
            else:
                assert float(targets[i].max()) == pytest.approx(1.0)
    assert pasted_any


def test_mixup_and_cutmix_together_use_both_across_batches():
    b = 16
    values = torch.arange(b) * 15 + 5  # every image one distinct grey level
    images = values.to(torch.uint8).view(b, 1, 1, 1).expand(b, 3, 8, 8).contiguous()
    cfg = augment_config(mixup=1.0, cutmix=1.0)
    kinds = set()
    for seed in range(12):
        out, _ = run(cfg, images, torch.arange(b), seed=seed, num_classes=b)
        # cutmix only copies pixels; mixup blends grey levels into values no input has
        kinds.add(bool(torch.isin(out.long(), values).all()))
    assert kinds == {True, False}


def test_randaugment_runs_and_is_reproducible():
    images, labels = batch()
    cfg = augment_config(randaugment=True)
    a, ta = run(cfg, images, labels, seed=4)
    b, _ = run(cfg, images, labels, seed=4)
    assert a.equal(b) and ta.equal(labels) and not a.equal(images)


def test_config_names_and_round_trip():
    with pytest.raises(CnnkitError, match="did you mean 'standard'"):
        augment_config("standrd")
    with pytest.raises(CnnkitError, match="crop_padding") as info:
        augment_config("basic", crop_pad=2)
    assert "rotation" in str(info.value)  # the valid names are listed
    with pytest.raises(CnnkitError):
        augment_config(erasing=1.5)
    with pytest.raises(CnnkitError):
        augment_config(trivialaugment=True, randaugment=True)
    cfg = augment_config("strong", rotation=5)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert PRESETS["strong"].rotation == 10.0  # presets are not mutated by overrides
    with pytest.raises(CnnkitError, match="did you mean 'mixup'"):
        AugmentConfig.from_dict({"mixupp": 0.2})
    for name in ("mixup", "crop_padding"):  # `mixup: true` in YAML
        with pytest.raises(CnnkitError, match=f"{name} takes a number"):
            augment_config(**{name: True})


def test_augment_generator_is_seeded_per_step():
    a = augment_generator(0, 1, 2).get_state()
    assert a.equal(augment_generator(0, 1, 2).get_state())
    assert not a.equal(augment_generator(0, 1, 3).get_state())
    assert not a.equal(augment_generator(1, 1, 2).get_state())


def test_save_batch_grid_and_soft_labels(tmp_path):
    images, labels = batch(b=10)
    path = save_batch_grid(images, [f"class {i}" for i in range(10)], tmp_path / "g.png", ncols=4)
    with Image.open(path) as im:
        assert im.size[0] > 4 * 96 and im.size[1] > 3 * 96
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    assert target_labels(soft, ["cat", "dog", "frog"]) == ["cat .70/dog .30", "frog 1.00"]
    assert target_labels(torch.tensor([2, 0]), ["cat", "dog", "frog"]) == ["frog", "cat"]
    with pytest.raises(ValueError):
        save_batch_grid(images, ["x"], tmp_path / "bad.png")


def test_show_batch_on_the_bundled_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    shown = show_batch("cifar10-sample", "standard", n=32, out=tmp_path / "batch.png")
    assert shown.count == 32 and shown.path.stat().st_size > 10_000
    assert shown.augmentation.describe().startswith("flip, crop 4, rotation 10")
    with Image.open(shown.path) as im:
        w, h = im.size
        assert im.format == "PNG" and 8 * 96 <= w <= 8 * 110 and 4 * 96 <= h <= 4 * 130
    soft = show_batch("cifar10-sample", "strong", n=16, out=tmp_path / "strong.jpg", seed=1)
    with Image.open(soft.path) as im:
        assert im.format == "JPEG" and soft.path.stat().st_size > 5_000
    make_split(tmp_path / "tiny", {"cat": 3, "dog": 2})
    everything = show_batch(str(tmp_path / "tiny"), "none", n=100, out=tmp_path / "all")
    assert everything.path.name == "all.png" and everything.count == 5  # all there are
    for n in (0, -3):
        with pytest.raises(CnnkitError, match="at least 1"):
            show_batch("cifar10-sample", n=n, out=tmp_path / "x.png")
    for name in ("x.notanimage", "x.psd"):  # unknown, and known but read-only in Pillow
        with pytest.raises(CnnkitError, match=r"\.png or \.jpg"):
            show_batch("cifar10-sample", n=4, out=tmp_path / name)
    assert show_batch("cifar10-sample", n=2, out=tmp_path / "UPPER.PNG").path.is_file()
