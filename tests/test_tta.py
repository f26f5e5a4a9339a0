"""Test-time augmentation: exact views, no wrap-around, logits averaged as documented."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.engine.device import Precision
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.loop import predict_logits
from cnnkit.tasks.classify.tta import (
    TTA_MODES,
    shift,
    tta_and_plain_logits,
    tta_logits,
    tta_views,
    tta_weights,
)

CPU_FP32 = Precision(torch.device("cpu"), "fp32")


def images(n: int = 5, height: int = 8, width: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=g)


def prepare(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255).sub(0.5)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 4, 3),  # 8x10 images -> 4 channels of 3x4
    )


def test_views_keep_shape_dtype_and_count():
    x = images()
    for mode, count in zip(TTA_MODES, (1, 2, 6), strict=True):
        views = tta_views(x, mode)
        assert len(views) == count == len(tta_weights(mode))
        assert sum(tta_weights(mode)) == 1.0
        assert all(v.shape == x.shape and v.dtype == torch.uint8 for v in views)
        assert torch.equal(views[0], x)


def test_flip_view_is_an_exact_mirror():
    x = images()
    flipped = tta_views(x, "flip")[1]
    width = x.shape[-1]
    for j in range(width):
        assert torch.equal(flipped[..., j], x[..., width - 1 - j])


@pytest.mark.parametrize("t", [1, 2, 3])
def test_translated_views_shift_the_interior_and_reflect_the_border(t):
    x = images()
    views = tta_views(x, "flip-translate", translate=t)
    down, up = views[2], views[4]
    assert torch.equal(down[..., t:, t:], x[..., :-t, :-t])
    assert torch.equal(up[..., :-t, :-t], x[..., t:, t:])
    assert torch.equal(views[3], down.flip(-1)) and torch.equal(views[5], up.flip(-1))
    # the border is the reflection (as F.pad "reflect" + crop in airbench), not a wrap-around
    height, width = x.shape[-2:]
    padded = F.pad(x.float(), (t, t, t, t), mode="reflect")
    assert torch.equal(down.float(), padded[..., :height, :width])
    assert torch.equal(up.float(), padded[..., 2 * t :, 2 * t :])
    rolled = x.roll((t, t), dims=(-2, -1))
    assert not torch.equal(down[..., :t, :], rolled[..., :t, :])


def test_shift_refuses_more_than_the_image_size():
    with pytest.raises(CnnkitError, match="shift"):
        shift(images(height=4, width=4), 4, 4)


def test_mode_none_is_exactly_predict_logits():
    model, x = tiny_model(), images(n=11)
    expected = predict_logits(model, x, prepare, CPU_FP32, batch_size=4)
    got = tta_logits(model, x, prepare, CPU_FP32, batch_size=4, mode="none")
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert torch.equal(got, expected)


def test_flip_is_the_mean_of_the_logits_on_the_image_and_its_mirror():
    model, x = tiny_model(), images(n=11)
    plain = predict_logits(model, x, prepare, CPU_FP32)
    mirrored = predict_logits(model, x.flip(-1), prepare, CPU_FP32)
    got = tta_logits(model, x, prepare, CPU_FP32, batch_size=4, mode="flip")
    torch.testing.assert_close(got, (plain + mirrored) / 2)
    assert not torch.allclose(got, plain)  # the model is not mirror-symmetric


def test_flip_translate_weights_the_six_views_like_airbench():
    model, x = tiny_model(), images(n=7)
    height, width = x.shape[-2:]
    padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect").to(torch.uint8)
    down, up = padded[..., :height, :width], padded[..., 2:, 2:]

    def mirror(v: torch.Tensor) -> torch.Tensor:
        plain = predict_logits(model, v, prepare, CPU_FP32)
        return 0.5 * plain + 0.5 * predict_logits(model, v.flip(-1), prepare, CPU_FP32)

    expected = 0.5 * mirror(x) + 0.5 * (mirror(down) + mirror(up)) / 2
    got = tta_logits(model, x, prepare, CPU_FP32, batch_size=3, mode="flip-translate")
    torch.testing.assert_close(got, expected)


def test_plain_logits_come_with_the_tta_logits_from_one_pass():
    model, x = tiny_model(), images(n=9)
    averaged, plain = tta_and_plain_logits(
        model, x, prepare, CPU_FP32, batch_size=4, mode="flip-translate"
    )
    assert torch.equal(plain, predict_logits(model, x, prepare, CPU_FP32, batch_size=4))
    expected = tta_logits(model, x, prepare, CPU_FP32, batch_size=4, mode="flip-translate")
    assert torch.equal(averaged, expected)


def test_unknown_mode_suggests_a_close_one():
    with pytest.raises(CnnkitError, match="did you mean 'flip'"):
        tta_views(images(), "flp")
    with pytest.raises(CnnkitError, match="did you mean 'flip-translate'"):
        tta_logits(tiny_model(), images(), prepare, CPU_FP32, mode="flip_translate")


def test_no_images_give_an_empty_result():
    out = tta_logits(tiny_model(), images(n=0), prepare, CPU_FP32, mode="flip")
    assert out.numel() == 0
