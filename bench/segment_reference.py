"""Penn-Fudan person segmentation, the peer side: torchvision's references/segmentation recipe
(train.py, presets.py, transforms.py, utils.py) rebuilt with torchvision's own API, on the
backbone cnnkit uses (torchvision's ImageNet MobileNetV2), trained on in-memory images for a
given wall time.

    python bench/segment_reference.py --seconds 60 --threads 1

That smoke mode trains on the first 20 Penn-Fudan images and scores 5 others; the benchmark that
runs cnnkit's segmentation preset beside it imports ``train_reference`` and ``predict_reference``.

The recipe, with where each setting comes from in vision/references/segmentation:

- model: ``torchvision.models.segmentation.FCN`` with ``FCNHead(1280, num_classes)`` (train.py
  ``--model`` defaults to fcn_resnet101; fcn.py builds ``FCNHead(2048, num_classes)`` on its
  backbone's last stage). Backbone: MobileNetV2's ``features`` with its ImageNet weights (the
  file ``mobilenet_v2_weights_file()`` finds, torchvision's mobilenet_v2-b0353104.pth) read at
  the last layer (1280 channels) by ``IntermediateLayerGetter``, as torchvision's MobileNetV3
  segmentation builders read theirs (``return_layers = {str(out_pos): "out"}``).
- output stride 16: every torchvision segmentation model dilates its backbone (ResNets
  ``replace_stride_with_dilation=[False, True, True]``, stride 8; MobileNetV3
  ``mobilenet_v3_large(..., dilated=True)``, "C5 which has output_stride = 16").
  ``mobilenet_v2`` has no ``dilated`` argument, so its last stride stage (features 14-17, from
  the last block with ``_is_cn``) is dilated by hand the way MobileNetV3's ``dilated=True``
  builds its blocks: the depthwise 3x3 convolutions take stride 1, dilation 2 and padding 2,
  the formerly strided one included (``stride = 1 if cnf.dilation > 1 else cnf.stride``;
  torchvision's ResNet convention would keep dilation 1 there). The weights are unchanged.
  ``output_stride=32`` leaves the backbone as ImageNet trained it (on one thread of the 2-core
  EPYC a batch of 4 at 480 px takes about 5 s at 16, 2 s at 32: FCNHead's 3x3 convolution from
  1280 channels sees 4x the positions).
- no auxiliary head (train.py ``--aux-loss`` is ``store_true``, so off by default).
- loss: ``cross_entropy(out, target, ignore_index=255)`` (train.py ``criterion``).
- SGD lr 0.01, momentum 0.9, weight decay 1e-4, on two parameter groups, backbone and
  classifier (train.py ``--lr``, ``--momentum``, ``--wd`` defaults and ``params_to_optimize``).
  The README's published runs change these per model (``--lr 0.02`` for the ResNet FCNs,
  ``--wd 0.000001`` for the MobileNetV3 ones); train.py's defaults are what is used here.
- schedule: poly, power 0.9, to 0 at the end of training, stepped every iteration (train.py
  ``PolynomialLR(optimizer, total_iters=iters_per_epoch * (args.epochs -
  args.lr_warmup_epochs), power=0.9)``); ``--lr-warmup-epochs`` defaults to 0, so no warmup.
- batch 4 (every README recipe runs ``-b 4`` per GPU, 8 GPUs; train.py's own default is 8),
  ``RandomSampler``, ``drop_last=True`` (train.py's training ``DataLoader``).
- train transforms (presets.py ``SegmentationPresetTrain(base_size=520, crop_size=480)``, its
  v2 path): ``RandomResize(int(0.5 * base_size), int(2.0 * base_size))`` of the shorter side,
  ``RandomHorizontalFlip(0.5)``, ``PadIfSmaller(crop_size)`` (right and bottom, 0 for the
  image, 255 for the ``tv_tensors.Mask``: v2_extras.py), ``RandomCrop(crop_size)``,
  ``ToDtype`` (image float32 scaled to [0, 1], mask int64), ``Normalize`` with ImageNet's mean
  and std, ``ToPureTensor``.
- eval transform (presets.py ``SegmentationPresetEval(base_size=520)``, the v1 path train.py
  runs by default): the shorter side resized to base_size, then ``ToDtype`` and ``Normalize``;
  batch 1 (train.py's test ``DataLoader``).

Where this deviates, and why:

- MobileNetV2 and its dilation (above): the references have no MobileNetV2 model; the benchmark
  compares on the backbone cnnkit uses.
- the poly schedule runs on time, not iterations: lr = 0.01 * (1 - elapsed / seconds) ** 0.9,
  set before every step. Training stops by wall time, so the iteration count is not known in
  advance, and on a shared CPU the step time drifts, so a total estimated from the first steps
  would leave the lr high at the end or reach 0 early; with the elapsed share the lr reaches 0
  when the time does, as the references' does at their last iteration.
- one process: the references train on 8 GPUs with ``SyncBatchNorm`` (batch-norm statistics
  over 32 images); here over the 4 of one batch. The lr is the references' (not scaled to the
  smaller total batch).
- the images are uint8 tensors in memory, not PIL files: v2 runs on ``tv_tensors.Image`` and
  ``tv_tensors.Mask`` (the references' ``--use-v2 --backend tv_tensor``; their default
  backend is PIL). Two small consequences: the resize is torchvision's antialiased tensor
  bilinear, and v2's ``RandomResize`` draws the size below max_size (``torch.randint``) where
  transforms.py's v1 draws up to it (``random.randint``).
- eval resizes the shorter side (the references' default v1 path); their v2 eval preset uses
  ``Resize(size=(base_size, base_size))``, a square that changes the aspect ratio.
- scoring is at each image's stored size (the logits upsampled back, bilinear) rather than on
  the resized image with a nearest-resized mask, so both sides of the benchmark are scored on
  the same pixels; and there is no per-epoch evaluation or checkpointing.
- batches are stacked (every training crop is crop_size square, so utils.py ``cat_list``'s
  padding to the largest image of a batch never applies); augmentation runs in the training
  process (the references use 16 loader workers) and counts against the wall time.
- the references set no seeds; here ``seed`` seeds Python's and torch's global generators (v2
  draws its sizes, flips and crops from torch's) and the sampler's own generator. The order and
  augmentations repeat; the number of steps and each step's lr follow the clock, so two runs
  of the same wall time are alike, not identical.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402
from torchvision.models.segmentation import FCN  # noqa: E402
from torchvision.models.segmentation.fcn import FCNHead  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.tasks.detect.backbones import mobilenet_v2_weights_file  # noqa: E402
from cnnkit.tasks.segment.dataset import IGNORE_INDEX, SegmentationSet  # noqa: E402
from cnnkit.tasks.segment.formats import read_segmentation  # noqa: E402
from common import print_machine  # noqa: E402

PENNFUDAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pennfudan"

MEAN = (0.485, 0.456, 0.406)  # presets.py's defaults, ImageNet's
STD = (0.229, 0.224, 0.225)
LR, MOMENTUM, WEIGHT_DECAY, POLY_POWER = 0.01, 0.9, 1e-4, 0.9  # train.py's defaults


# ---- model ------------------------------------------------------------------------------------
def reference_model(num_classes: int, *, output_stride: int = 16) -> FCN:
    """FCN with FCNHead on MobileNetV2's ImageNet features, at output stride 16 or 32."""
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
    net = torchvision.models.mobilenet_v2()
    state = torch.load(mobilenet_v2_weights_file(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    features = net.features
    if output_stride == 16:
        # The last stride stage, from the last strided block (torchvision marks them _is_cn),
        # dilated as MobileNetV3's dilated=True builds it: depthwise stride 1, dilation 2.
        last_strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)][
            -1
        ]
        for block in features[last_strided:]:
            for conv in block.modules():
                if isinstance(conv, nn.Conv2d) and conv.groups > 1:
                    conv.stride, conv.dilation = (1, 1), (2, 2)
                    conv.padding = ((conv.kernel_size[0] - 1) // 2 * 2,) * 2
    backbone = IntermediateLayerGetter(features, return_layers={str(len(features) - 1): "out"})
    return FCN(backbone, FCNHead(net.last_channel, num_classes), aux_classifier=None)


# ---- transforms (presets.py, v2) --------------------------------------------------------------
class PadIfSmaller(v2.Transform):
    """v2_extras.PadIfSmaller with v2's public Transform API: pad right and bottom up to
    ``size`` (0 for the image, 255 for the mask), unlike RandomCrop's pad_if_needed."""

    def __init__(self, size: int, fill: int = 0, mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.size, self.fill, self.mask_fill = size, fill, mask_fill

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        return {"padding": [0, 0, max(self.size - width, 0), max(self.size - height, 0)]}

    def transform(self, inpt, params: dict):
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.fill
        return v2.functional.pad(inpt, padding=params["padding"], fill=fill)


def train_transform(base_size: int, crop_size: int, hflip_prob: float = 0.5) -> v2.Compose:
    """SegmentationPresetTrain on tv_tensors: (Image uint8, Mask) -> (float (3, c, c), int64)."""
    return v2.Compose(
        [
            v2.RandomResize(min_size=int(0.5 * base_size), max_size=int(2.0 * base_size)),
            v2.RandomHorizontalFlip(hflip_prob),
            PadIfSmaller(crop_size),
            v2.RandomCrop(crop_size),
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize(mean=MEAN, std=STD),
            v2.ToPureTensor(),
        ]
    )


def eval_transform(base_size: int) -> v2.Compose:
    """SegmentationPresetEval (v1 path): shorter side to base_size, float, normalised."""
    return v2.Compose(
        [
            v2.Resize(base_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=MEAN, std=STD),
            v2.ToPureTensor(),
        ]
    )


class _Samples(torch.utils.data.Dataset):
    """A SegmentationSet's images and masks as tv_tensors through a joint transform."""

    def __init__(self, data: SegmentationSet, transform: v2.Compose) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(self.data.images[i])
        mask = tv_tensors.Mask(self.data.masks[i])
        return self.transform(image, mask)


# ---- training and prediction ------------------------------------------------------------------
def train_reference(
    train: SegmentationSet,
    seconds: float,
    *,
    seed: int = 0,
    threads: int | None = None,
    base_size: int = 520,
    crop_size: int = 480,
    batch_size: int = 4,
    output_stride: int = 16,
    log=print,
) -> tuple[torch.nn.Module, dict]:
    """torchvision's FCN (torchvision.models.segmentation.FCN with FCNHead) on MobileNetV2
    ImageNet features (output stride 16 by default), trained with the references/segmentation
    recipe (SGD 0.01, momentum 0.9, weight decay 1e-4, poly 0.9 on the elapsed share of
    ``seconds``, SegmentationPresetTrain's random resize / flip / pad / crop, batch 4, no aux
    loss) for ``seconds`` of wall time (checked after each step); returns (model in eval mode,
    info dict with epochs, steps, seconds, recipe settings)."""
    if threads:
        torch.set_num_threads(threads)
    if len(train) < batch_size:
        raise ValueError(f"{len(train)} training images, fewer than one batch of {batch_size}")
    random.seed(seed)
    torch.manual_seed(seed)
    model = reference_model(len(train.classes), output_stride=output_stride)
    loader = torch.utils.data.DataLoader(
        _Samples(train, train_transform(base_size, crop_size)),
        batch_size=batch_size,
        sampler=torch.utils.data.RandomSampler(
            range(len(train)), generator=torch.Generator().manual_seed(seed)
        ),
        drop_last=True,
        num_workers=0,
    )
    params = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    started, epochs, steps, loss_value, done = time.perf_counter(), 0, 0, float("nan"), False
    while not done:
        model.train()
        for images, targets in loader:
            factor = max(0.0, 1.0 - (time.perf_counter() - started) / seconds) ** POLY_POWER
            for group in optimizer.param_groups:
                group["lr"] = LR * factor
            loss = F.cross_entropy(model(images)["out"], targets, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps, loss_value = steps + 1, loss.item()
            if time.perf_counter() - started >= seconds:
                done = True
                break
        else:
            epochs += 1
            log(
                f"reference epoch {epochs}: step {steps}, loss {loss_value:.4f}, "
                f"lr {LR * factor:.5f}, {time.perf_counter() - started:.0f}s"
            )
    elapsed = time.perf_counter() - started
    log(f"reference done: {steps} steps, {epochs} epochs, loss {loss_value:.4f}, {elapsed:.0f}s")
    info = {
        "epochs": epochs,  # full passes over the training images
        "steps": steps,
        "seconds": round(elapsed, 1),
        "last_loss": round(loss_value, 4),
        "threads": torch.get_num_threads(),
        "recipe": {
            "model": "FCN + FCNHead(1280), MobileNetV2 ImageNet features",
            "output_stride": output_stride,
            "aux_loss": False,
            "loss": "cross_entropy, ignore_index 255",
            "optimizer": f"SGD lr {LR} momentum {MOMENTUM} weight_decay {WEIGHT_DECAY}",
            "schedule": f"poly power {POLY_POWER} on elapsed / {seconds:g} s, no warmup",
            "batch_size": batch_size,
            "base_size": base_size,
            "crop_size": crop_size,
            "train_transform": "resize shorter side [0.5, 2.0) x base_size, hflip 0.5, "
            "pad right/bottom (0, mask 255) to crop_size, random crop, ImageNet normalise",
            "eval_transform": "resize shorter side to base_size, ImageNet normalise",
            "seed": seed,
        },
    }
    return model.eval(), info


def predict_reference(model, images: list[torch.Tensor], *, base_size: int) -> list[torch.Tensor]:
    """Per uint8 (3, h, w) image, an int64 (h, w) class map at that image's size (the
    references' eval transform: shorter side resized to base_size, normalised; the logits
    upsampled back, bilinear, before the argmax). One image at a time, as the references' test
    loader does."""
    transform = eval_transform(base_size)
    model.eval()
    out = []
    with torch.inference_mode():
        for image in images:
            logits = model(transform(tv_tensors.Image(image))[None])["out"]
            logits = F.interpolate(
                logits, size=image.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append(logits.argmax(1)[0])
    return out


# ---- smoke mode -------------------------------------------------------------------------------
def main() -> None:
    from cnnkit.tasks.segment import metrics as segment_metrics  # only the smoke mode scores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training wall time")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=20)
    parser.add_argument("--test-images", type=int, default=5)
    parser.add_argument("--base-size", type=int, default=520)
    parser.add_argument("--crop-size", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output-stride", type=int, default=16, choices=(16, 32))
    parser.add_argument("--out", default=None, help="also write the results JSON here")
    args = parser.parse_args()
    machine = print_machine()
    data = read_segmentation(PENNFUDAN, val_split=0.0, seed=0).train
    n = args.train_images
    train = data.subset(range(n))
    test = data.subset(range(n, n + args.test_images))
    model, info = train_reference(
        train,
        args.seconds,
        seed=args.seed,
        threads=args.threads,
        base_size=args.base_size,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        output_stride=args.output_stride,
    )
    started = time.perf_counter()
    predictions = predict_reference(model, test.images, base_size=args.base_size)
    predict_seconds = time.perf_counter() - started
    metrics = segment_metrics.segmentation_metrics(predictions, test.masks, test.classes)
    person = metrics.per_class_iou.get("person")
    print(
        f"reference on {len(test)} test images: mIoU {metrics.miou:.4f}, person IoU "
        f"{'n/a' if person is None else f'{person:.4f}'}, pixel accuracy "
        f"{metrics.pixel_accuracy:.4f} ({predict_seconds:.1f}s to predict)",
        flush=True,
    )
    result = {
        "machine": machine,
        "train_images": len(train),
        "test_images": len(test),
        "reference": {
            **info,
            "miou": round(metrics.miou, 4),
            "per_class_iou": {
                k: None if v is None else round(v, 4) for k, v in metrics.per_class_iou.items()
            },
            "pixel_accuracy": round(metrics.pixel_accuracy, 4),
            "predict_seconds": round(predict_seconds, 1),
        },
    }
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
