"""The perceptual goal's feature extractor: VGG16's convolutional stack, from a local file.

LBO.md, section 6: ``perceptual`` is the MSE of pretrained VGG features of the
reconstruction and the input. The network is defined here in plain torch, with
the parameter names of torchvision's ``vgg16`` (``features.0.weight``,
``features.0.bias``, ``features.2.weight``, ...), so the weights come from a
torchvision VGG16 checkpoint the user already has (``vgg16-397923af.pth``,
say); torchvision itself is neither needed nor imported, and nothing is
downloaded. The stack is cut after `DEFAULT_LAYER` (``relu3_3``): deeper
layers see little of a 32x32 image, which three max-pools have already
shrunk to 4x4.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

__all__ = [
    "DEFAULT_LAYER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYERS",
    "VGG16_CONFIG",
    "VGGFeatures",
    "load_vgg_features",
]

VGG16_CONFIG: Final[tuple[int | str, ...]] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
"""VGG16's convolutional stack ("configuration D"): 3x3 convolutions, each with a ReLU, and
``"M"``, a 2x2 max-pool; as torchvision numbers it, ``features.0`` is the first convolution,
``features.1`` its ReLU, ``features.4`` the first pool."""

LAYERS: Final[Mapping[str, int]] = {
    "relu1_2": 4,
    "relu2_2": 9,
    "relu3_3": 16,
    "relu4_3": 23,
    "relu5_3": 30,
}
"""The layers a `VGGFeatures` may end at: how many modules of ``features`` each one keeps
(``features[:n]``, the last of them that layer's ReLU)."""

DEFAULT_LAYER: Final = "relu3_3"
"""The layer the trainer's perceptual goal compares: 256 maps at a quarter of the image's side."""

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
"""The per-channel mean of the ImageNet images VGG16 was trained on (RGB, in ``[0, 1]``)."""

IMAGENET_STD: Final = (0.229, 0.224, 0.225)
"""The per-channel standard deviation of those images."""


def _stack(length: int) -> list[nn.Module]:
    """The first ``length`` modules of VGG16's ``features``, in torchvision's order."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            width = int(item)
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
            channels = width
    return layers[:length]


class VGGFeatures(nn.Module):
    """VGG16's convolutional stack up to ``layer``, frozen, on images in ``[0, 1]``.

    The parameters are named as in torchvision's ``vgg16`` (``features.0.weight``,
    ``features.0.bias``, ``features.2.weight``, ...), so its state dict loads
    here (`load_vgg_features` loads one from a file). Every parameter is
    frozen (``requires_grad`` False) and the module is in evaluation mode;
    gradients still flow to the input, which is what the perceptual goal
    trains through. A new instance has torch's random initial weights.

    Args:
        layer: The layer whose activations `forward` returns: a key of
            `LAYERS`.

    Raises:
        ValueError: ``layer`` is not a key of `LAYERS`.

    Examples:
        >>> net = VGGFeatures()  # random weights: load a file for real ones
        >>> list(net.state_dict())[:3]
        ['features.0.weight', 'features.0.bias', 'features.2.weight']
        >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> net(x).shape
        torch.Size([2, 256, 8, 8])
        >>> net(x).square().mean().backward()
        >>> x.grad is not None, net.features[0].weight.grad is None
        (True, True)
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, layer: str = DEFAULT_LAYER) -> None:
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(
                f"VGGFeatures: layer must be one of {', '.join(map(repr, LAYERS))}, got {layer!r}"
            )
        self.layer = layer
        self.features = nn.Sequential(*_stack(LAYERS[layer]))
        # Not persistent: the state dict holds torchvision's keys and nothing else.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The feature maps of a batch of images.

        Args:
            images: ``(B, 3, H, W)`` RGB, or ``(B, 1, H, W)`` grey (copied to
                the three channels), in ``[0, 1]``; normalised here with
                `IMAGENET_MEAN` and `IMAGENET_STD`.

        Returns:
            ``(B, C, H / s, W / s)``: 256 maps at a quarter of the side for
            ``relu3_3``.

        Raises:
            ValueError: ``images`` is not ``(B, 1 or 3, H, W)``.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"VGGFeatures takes (B, 3, H, W) or (B, 1, H, W) images, "
                f"got shape {tuple(images.shape)}"
            )
        images = images.expand(-1, 3, -1, -1)
        out: torch.Tensor = self.features((images - self.mean) / self.std)
        return out


def load_vgg_features(
    path: str | os.PathLike[str],
    *,
    layer: str = DEFAULT_LAYER,
    device: torch.device | str | None = None,
) -> VGGFeatures:
    """A `VGGFeatures` with the weights of a local torchvision VGG16 file; nothing is downloaded.

    The file is read with ``torch.load(path, map_location="cpu",
    weights_only=True)`` and may hold either a whole ``vgg16`` state dict (its
    ``features.*`` keys are used; ``classifier.*`` and the layers past
    ``layer`` are ignored) or the state dict of its ``features`` alone, with
    or without the ``features.`` prefix (``0.weight``, ...). Weights of
    another floating dtype are cast to float32.

    Args:
        path: The weights file, e.g. torchvision's ``vgg16-397923af.pth``.
        layer: The layer the extractor ends at (a key of `LAYERS`).
        device: Where to put the extractor; None leaves it on the CPU.

    Returns:
        The frozen extractor, in evaluation mode.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be read, holds no state dict, or its
            state dict lacks a key the extractor needs or holds one of the
            wrong shape (the message names the file and the first such key).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save(VGGFeatures().state_dict(), f"{tmp}/vgg.pth")
        ...     net = load_vgg_features(f"{tmp}/vgg.pth")
        >>> net(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 256, 4, 4])
    """
    file = Path(path)
    where = f"perceptual weights file {str(file)!r}"
    if not file.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a corrupt file
        raise ValueError(f"{where} cannot be read as a torch state dict: {error}") from None
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{where} holds a {type(state).__name__}, not a state dict of torchvision's vgg16"
        )
    net = VGGFeatures(layer)
    net.load_state_dict(_features_state(state, net.state_dict(), where))
    return net if device is None else net.to(device)


def _features_state(
    state: Mapping[Any, Any], expected: Mapping[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` that ``expected`` names, checked key by key in order."""
    prefixed = any(isinstance(k, str) and k.startswith("features.") for k in state)
    found = {
        (k if prefixed else f"features.{k}"): v for k, v in state.items() if isinstance(k, str)
    }
    picked: dict[str, torch.Tensor] = {}
    for name, want in expected.items():
        if name not in found:
            raise ValueError(
                f"{where} has no key {name!r}: expected the state dict of torchvision's vgg16 "
                "(features.0.weight, features.0.bias, features.2.weight, ...)"
            )
        value = found[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"{where}: {name!r} is not a floating-point tensor")
        if value.shape != want.shape:
            raise ValueError(
                f"{where}: {name!r} has shape {tuple(value.shape)}, VGG16 has {tuple(want.shape)}"
            )
        picked[name] = value
    return picked
