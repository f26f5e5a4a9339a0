"""ModelEMA against the averaging formula worked out by hand."""

import io

import pytest
import torch
from torch import nn

from cnnkit.engine.ema import ModelEMA


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@torch.no_grad()
def randomise(model: nn.Module) -> None:
    for p in model.parameters():
        p.copy_(torch.randn_like(p))


def train_step(model: nn.Module, seed: int) -> None:
    """A real optimiser step in train mode (moves the weights and BatchNorm's statistics)."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(8, 3, 6, 6)).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_one_update_without_warmup_is_the_ema_formula():
    torch.manual_seed(0)
    model = small_net()
    ema = ModelEMA(model, decay=0.9, warmup=False)
    w0 = weights(model)
    randomise(model)
    w1 = weights(model)
    ema.update(model)
    for averaged, a, b in zip(ema.module.parameters(), w0, w1, strict=True):
        torch.testing.assert_close(averaged, 0.9 * a + 0.1 * b)
    assert ema.updates == 1


def test_warmup_follows_the_formula_then_caps_at_decay():
    torch.manual_seed(0)
    model = small_net()
    ema = ModelEMA(model, decay=0.5, warmup=True)
    expected = [w.double() for w in weights(model)]
    decays = []
    for n in range(12):
        d = min(0.5, (1 + n) / (10 + n))
        decays.append(d)
        assert ema.decay_at(n) == d
        randomise(model)
        new = weights(model)
        expected = [d * e + (1 - d) * w.double() for e, w in zip(expected, new, strict=True)]
        ema.update(model)
    assert decays[0] == pytest.approx(0.1) and decays[-1] == 0.5  # warm-up, then the cap
    for averaged, e in zip(ema.module.parameters(), expected, strict=True):
        torch.testing.assert_close(averaged.double(), e, rtol=1e-6, atol=1e-6)


def test_batchnorm_statistics_are_averaged_and_the_counter_copied():
    torch.manual_seed(0)
    model = small_net()
    ema = ModelEMA(model, decay=0.75, warmup=False)
    bn_ema, bn = ema.module[1], model[1]
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    train_step(model, seed=1)
    train_step(model, seed=2)
    ema.update(model)
    torch.testing.assert_close(bn_ema.running_mean, 0.75 * mean0 + 0.25 * bn.running_mean)
    torch.testing.assert_close(bn_ema.running_var, 0.75 * var0 + 0.25 * bn.running_var)
    assert int(bn_ema.num_batches_tracked) == int(bn.num_batches_tracked) == 2


def test_module_is_an_eval_copy_that_predicts_like_a_plain_model_with_its_weights():
    torch.manual_seed(0)
    model = small_net()
    ema = ModelEMA(model, decay=0.8)
    for step in range(5):
        train_step(model, seed=step)
        ema.update(model)
    module = ema.module
    assert type(module) is type(model) and module is not model
    assert not module.training
    assert not any(p.requires_grad for p in module.parameters())
    plain = small_net()
    plain.load_state_dict(module.state_dict())
    plain.eval()
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(module(x), plain(x), rtol=0, atol=0)
        assert not torch.allclose(module(x), model.eval()(x))  # the average, not the model


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    model = small_net()
    first = ModelEMA(model, decay=0.99)
    for step in range(3):
        train_step(model, seed=step)
        first.update(model)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(123)
    second = ModelEMA(small_net(), decay=0.99)  # different weights until loaded
    second.load_state_dict(state)
    assert second.updates == 3
    for step in range(3, 6):  # the warm-up decay depends on the restored count
        train_step(model, seed=step)
        first.update(model)
        second.update(model)
    for a, b in zip(
        first.module.state_dict().values(), second.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_wrapped_models_are_unwrapped():
    torch.manual_seed(0)
    model = small_net()
    wrapped = nn.DataParallel(model)  # same unwrapping path as DDP's .module
    ema = ModelEMA(wrapped, decay=0.5, warmup=False)
    assert type(ema.module) is nn.Sequential
    w0 = weights(model)
    randomise(model)
    ema.update(wrapped)
    for averaged, a, b in zip(ema.module.parameters(), w0, weights(model), strict=True):
        torch.testing.assert_close(averaged, 0.5 * a + 0.5 * b)
    assert set(ema.state_dict()["state_dict"]) == set(model.state_dict())  # no "module." prefix


def test_compiled_models_are_unwrapped():
    torch.manual_seed(0)
    model = small_net()
    compiled = torch.compile(model)  # never called: no compilation, only the wrapper
    ema = ModelEMA(compiled, decay=0.5, warmup=False)
    assert type(ema.module) is nn.Sequential and not hasattr(ema.module, "_orig_mod")
    w0 = weights(model)
    randomise(model)
    ema.update(compiled)
    for averaged, a, b in zip(ema.module.parameters(), w0, weights(model), strict=True):
        torch.testing.assert_close(averaged, 0.5 * a + 0.5 * b)


def test_a_different_model_is_refused():
    ema = ModelEMA(small_net())
    with pytest.raises(ValueError, match="whole model"):
        ema.update(nn.Linear(4, 3))
