"""`--compile`: torch.compile wraps the training module; checkpoints hold the plain weights."""

import shutil

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.config import TrainConfig
from cnnkit.engine.fit import Trainer
from cnnkit.errors import CnnkitError

TINY = "conv2d:8,relu,maxpool2d,conv2d:16,relu,global_avg_pool,dense"


TINY_RUN = dict(data="cifar10-sample", model=TINY, epochs=1, batch_size=128, precision="fp32")

pytestmark = pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")),
    reason="torch.compile on the CPU needs a C++ compiler",
)


def tiny_run(tmp_path, name: str, **kw):
    return cnnkit.train(**TINY_RUN, project=str(tmp_path), name=name, progress=False, **kw)


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path):
    eager = tiny_run(tmp_path, "eager")
    cfg = TrainConfig(**{**TINY_RUN, "compile": True, "project": str(tmp_path)})
    (tmp_path / "compiled").mkdir()
    trainer = Trainer(cfg, tmp_path / "compiled", progress=False)
    compiled = trainer.fit()
    # the module that trained was the torch.compile wrapper of the model
    assert isinstance(
        trainer._compiled[id(trainer.model)], torch._dynamo.eval_frame.OptimizedModule
    )
    # the same math: the epoch's mean training loss agrees to float rounding
    assert compiled.history[0]["train_loss"] == pytest.approx(
        eager.history[0]["train_loss"], rel=1e-3
    )
    state = torch.load(compiled.best, weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    classifier = cnnkit.load(compiled.best)
    prediction = classifier.predict(np.zeros((32, 32, 3), dtype=np.uint8))
    assert len(prediction.top_k) == 5 and prediction.label in classifier.classes


def test_a_compiler_failure_is_one_clear_line(tmp_path, monkeypatch):
    inductor = pytest.importorskip("torch._inductor.config")
    # what a machine without a C++ compiler looks like to torch.compile on the CPU
    monkeypatch.setattr(inductor.cpp, "cxx", (None, "no-such-c++-compiler"))
    monkeypatch.setattr(inductor, "force_disable_caches", True)  # no kernels from earlier tests
    torch._dynamo.reset()  # nor graphs compiled in memory
    with pytest.raises(CnnkitError, match="--compile failed.*without --compile"):
        tiny_run(tmp_path, "broken", compile=True)
