"""Segmenters: every head on the shipped backbones, exact dilation, layer-spec FCNs, specs that
rebuild without weights, and torchvision's COCO segmenters from a weights file."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.backbones import build_backbone
from cnnkit.tasks.segment.models import (
    build_segmenter,
    is_layer_spec,
    load_coco_segmenter,
    segmenter_from_record,
    segmenter_spec,
)
from cnnkit.tasks.segment.networks import dilate

FCN_LAYERS = (
    "conv2d:8:3:padding=same,relu,maxpool2d,conv2d:16:3:padding=same,relu,maxpool2d,"
    "conv_transpose2d:16,relu,upsample:2,conv2d:kernel=1"
)


@pytest.mark.parametrize(
    "name",
    [
        "fcn",
        "deeplabv3",
        "lraspp",
        "lraspp_efficientnet_lite0",
        "deeplabv3_lite0",
        "fcn_resnet18",
        "deeplabv3plus",
        "deeplabv3plus_lite0",
        "deeplabv3plus_resnet18",
    ],
)
def test_every_head_gives_logits_at_the_input_size(name):
    model = build_segmenter(name, 3, pretrained_backbone=False, image_size=96).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, 96, 80), dtype=torch.uint8))
    assert out.shape == (2, 3, 96, 80)
    assert len(model.blocks()) == 5  # the backbone's stride stages 2..32


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0", "resnet18"])
def test_deeplabv3plus_decodes_from_the_stride_4_map(backbone):
    model = build_segmenter(f"deeplabv3plus_{backbone}", 2, pretrained_backbone=False).eval()
    with torch.no_grad():
        features = model.net.body(torch.randn(1, 3, 128, 96))
        coarse = model.net(torch.randn(1, 3, 128, 96))
    assert features["fine"].shape[-2:] == (32, 24)  # stride 4
    assert features["out"].shape[-2:] == (8, 6)  # output stride 16
    assert coarse.shape[-2:] == (32, 24)  # logits at stride 4, then upsampled to the input


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0", "resnet18"])
def test_dilation_keeps_the_strided_networks_values_at_every_other_position(backbone):
    torch.manual_seed(0)
    plain = build_backbone(backbone, pretrained=False)
    dilated = build_backbone(backbone, pretrained=False)
    dilated.layers.load_state_dict(plain.layers.state_dict())
    dilate(dilated.layers, dilated.strides, 16)
    plain.layers.eval()
    dilated.layers.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = plain.layers(x), dilated.layers(x)
    assert a.shape[-1] == 4 and b.shape[-1] == 8
    sub = b[..., 1::2, 1::2] if backbone == "efficientnet_lite0" else b[..., ::2, ::2]
    assert torch.allclose(a, sub, atol=1e-4, rtol=1e-3)  # TF "same" pads one side: offset 1


def test_output_stride_is_checked_and_stored():
    assert segmenter_spec("deeplabv3").output_stride == 16
    assert segmenter_spec("fcn").output_stride == 8
    assert segmenter_spec("lraspp", output_stride=32).options == {"output_stride": 32}
    for bad in ({"output_stride": 4}, {"output_stride": True}):
        with pytest.raises(CnnkitError, match="output_stride"):
            segmenter_spec("fcn", **bad)
    with pytest.raises(CnnkitError, match="LR-ASPP"):
        segmenter_spec("lraspp", output_stride=8)
    with pytest.raises(CnnkitError, match="segmenter"):
        segmenter_spec("unet_resnet18")
    with pytest.raises(CnnkitError, match="no option"):
        segmenter_spec("fcn", fpn_channels=64)


def test_a_segmenter_rebuilds_from_its_record_with_the_same_outputs():
    model = build_segmenter("lraspp", 2, pretrained_backbone=False, image_size=64).eval()
    rebuilt = segmenter_from_record(model.record()).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert rebuilt.spec.name == "lraspp_mobilenet_v2"


def test_a_layer_spec_fcn_ends_in_one_channel_per_class_at_the_input_size():
    assert is_layer_spec(FCN_LAYERS) and not is_layer_spec("fcn_resnet50")
    model = build_segmenter(FCN_LAYERS, 4, image_size=64)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 4, 64, 64)
    assert model.blocks() == [] and model.spec.weights_kind is None
    rebuilt = segmenter_from_record(model.record())
    assert rebuilt.spec.layers == model.spec.layers
    with pytest.raises(CnnkitError, match="must end in"):  # pooled twice, upsampled once
        build_segmenter("conv2d:8:3:padding=same,maxpool2d,maxpool2d,upsample,conv2d:1", 4)
    with pytest.raises(CnnkitError, match="conv2d needs filters"):
        build_segmenter("conv2d:kernel=3:padding=same,conv2d:kernel=1", 2, image_size=32)
    with pytest.raises(CnnkitError, match="from scratch"):
        segmenter_spec(FCN_LAYERS, pretrained="imagenet")


def test_pretrained_backbones_keep_their_batchnorm_in_eval_mode_and_train_whole():
    model = build_segmenter("lraspp", 2, image_size=64)  # the packaged ImageNet weights
    assert model.backbone_bn_eval
    model.freeze("all")
    model.train()
    bns = [m for b in model.blocks() for layer in b for m in layer.modules()]
    bns = [m for m in bns if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    head = [m for m in model.net.head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert head and all(m.training for m in head)
    groups = model.param_groups(0.1, 0.5)
    assert groups[0]["name"] == "head" and groups[0]["lr"] == 0.1
    assert len(groups) == 6  # the head and five backbone blocks


def test_torchvisions_coco_segmenter_loads_its_file_but_the_class_layers(tmp_path):
    """A file in the layout torchvision publishes (21 VOC classes, an auxiliary head) loads into
    a model for 2 classes: everything but the last layers, which keep their new init."""
    name = "lraspp_mobilenet_v3_large"
    coco = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=21)
    state = coco.state_dict()
    state["aux_classifier.0.weight"] = torch.zeros(1)  # torchvision's FCN/DeepLab files have one
    path = tmp_path / "lraspp_coco.pth"
    torch.save(state, path)
    spec = segmenter_spec(name, pretrained="coco")
    model = build_segmenter(spec, 2, image_size=64, pretrained_backbone=False)
    net = model.net.model
    fresh = net.classifier.high_classifier.weight.clone()
    load_coco_segmenter(net, name, path)
    assert torch.equal(net.backbone["0"][0].weight, coco.backbone["0"][0].weight)
    assert torch.equal(net.classifier.high_classifier.weight, fresh)
    assert net.classifier.high_classifier.weight.shape[0] == 2
    built = build_segmenter(
        {"name": name, "options": {"pretrained": "coco", "weights": str(path)}}, 2
    )
    assert torch.equal(built.net.model.backbone["0"][0].weight, coco.backbone["0"][0].weight)
    assert built(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_coco_weights_offline_name_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CnnkitError, match=r"put .*deeplabv3_mobilenet_v3_large.*\.pth in"):
        build_segmenter(segmenter_spec("deeplabv3_mobilenet_v3_large", pretrained="coco"), 2)
    with pytest.raises(CnnkitError, match="torchvision.s segmentation models"):
        segmenter_spec("lraspp_mobilenet_v2", pretrained="coco")
