"""Student networks, built by name.

Students are plain `nn.Module`s used functionally: the training process keeps parameters and
BatchNorm buffers in dicts and calls `torch.func.functional_call(model, (params, buffers), (x,))`,
so a step can carry a graph to the teacher, and `torch.func.vmap` can train N students at once.
Hence every forward here has no `.item()`, no data-dependent branches and no in-place ops on
activations or parameters. BatchNorm in train mode still updates the running-stat tensors it is
given in place (that is how `F.batch_norm` works); callers clone buffers they want to keep.

Parameter counts on CIFAR-10 (3x32x32, 10 classes), checked in tests/test_models.py:

    resnet8 / 20 / 32             75,290 / 269,722 / 464,154     He et al. 2016, option A
    resnet8 / 20 / 32 -wide    1,235,274 / 4,335,434 / 7,435,594  L2T-DLN's released model.py
    wrn (WRN-16-4)             2,748,890                          Zagoruyko & Komodakis 2016
    lenet                         62,006                          LeNet-5 (61,706 on 1x28x28)
    mlp (hidden 256)             789,258                          (203,530 on 1x28x28)
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Shape = tuple[int, int, int]


MLP_ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "softplus": F.softplus}


class MLP(nn.Module):
    """Flatten, then Linear-activation layers of sizes `hidden`, then a Linear to the logits.

    ``activation`` defaults to ReLU; a smooth one (tanh, softplus) makes the trained weights a
    smooth function of the loss coefficients, which finite-difference checks of hypergradients
    need (through ReLU the gradient jumps at kinks, so w_{t+1} is discontinuous in Phi).
    """

    def __init__(
        self,
        input_shape: Shape,
        num_classes: int,
        hidden: int | tuple[int, ...] = 256,
        activation: str = "relu",
    ):
        super().__init__()
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(MLP_ACTIVATIONS)}")
        self.activation = MLP_ACTIVATIONS[activation]
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        sizes = [math.prod(input_shape), *hidden, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class LeNet(nn.Module):
    """LeNet-5: conv5x5(6)-pool-conv5x5(16)-pool-FC120-FC84-FC(C), ReLU and max-pooling.

    Inputs under 32 pixels are zero-padded by 2 in the first conv, as LeNet-5 padded MNIST's
    28x28 to 32x32, so MNIST and CIFAR both reach the classifier as 16x5x5.
    """

    def __init__(self, input_shape: Shape, num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        pad = 2 if min(height, width) < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape, "lenet"), 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class DemoLeNet(nn.Module):
    """The official L2T-DLF demo's student (the Theano tutorial's LeNet): conv5x5(20)-pool-tanh,
    conv5x5(50)-pool-tanh, FC 500 tanh, FC(C); no padding (MNIST: 50x4x4 = 800 features).
    Initialised by `init_student` like every student, not by the demo's Glorot-uniform draw."""

    def __init__(self, input_shape: Shape, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 20, 5), nn.MaxPool2d(2), nn.Tanh(),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2), nn.Tanh(),
            nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape, "lenet-demo"), 500), nn.Tanh(),
            nn.Linear(500, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class PadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by `stride`, zero-pad the new channels.

    It has no parameters, which is what gives the CIFAR ResNets their classic counts.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)  # (W, H, C) pairs

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], self.pad)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (post-activation).

    `shortcut` is "A" (parameter-free zero padding) or "B" (1x1 conv + BN, as in L2T-DLN's code),
    used only where the shape changes; elsewhere the shortcut is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))  # not `out +=`: no in-place ops


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. 2016 for 32x32 images: conv3x3 stem, three stages of n
    BasicBlocks (stride 1, 2, 2), pooling, Linear.

    Defaults are the paper's: widths 16/32/64, option A shortcuts, global average pooling.
    `pool=4` replaces global pooling by the 4x4 average pool of L2T-DLN's code, whose classifier
    then sees 2x2 positions on CIFAR (1x1 on MNIST's 7x7 map).
    """

    def __init__(
        self,
        input_shape: Shape,
        num_classes: int,
        blocks: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: str = "A",
        pool: int | None = None,
    ):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(in_channels, width, stride, shortcut))
                in_channels = width
        layers.append(nn.AdaptiveAvgPool2d(1) if pool is None else nn.AvgPool2d(pool))
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(_flat_size(self.features, input_shape, "resnet"), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class PreActBlock(nn.Module):
    """Wide ResNet block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus identity or a 1x1 conv shortcut
    applied to the pre-activated input (as in the authors' code)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """WRN-depth-widen of Zagoruyko & Komodakis 2016: (depth-4)/6 blocks per stage, widths
    16k/32k/64k, final BN-ReLU, global average pooling. No dropout, to keep vmap simple."""

    def __init__(self, input_shape: Shape, num_classes: int, depth: int = 16, widen: int = 4):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}"
            )
        blocks = (depth - 4) // 6
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)]
        in_channels = 16
        for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(PreActBlock(in_channels, width, stride))
                in_channels = width
        layers += [nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def _flat_size(body: nn.Module, input_shape: Shape, name: str) -> int:
    """Features per example after `body`, from a forward on the meta device: no compute, no
    RNG, and `body`'s own BatchNorm buffers are left alone."""
    state = {
        k: torch.empty_like(v, device="meta")
        for k, v in itertools.chain(body.named_parameters(), body.named_buffers())
    }
    try:
        out = functional_call(body, state, (torch.empty(1, *input_shape, device="meta"),))
    except RuntimeError as e:
        raise ValueError(f"{name} cannot take inputs of shape {input_shape}: {e}") from e
    return out[0].numel()


STUDENTS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet,
    "lenet-demo": DemoLeNet,
    "resnet8": partial(CifarResNet, blocks=1),
    "resnet20": partial(CifarResNet, blocks=3),
    "resnet32": partial(CifarResNet, blocks=5),
    # L2T-DLN's released model.py: widths 64/128/256, 1x1-conv shortcuts, 4x4 average pool
    "resnet8-wide": partial(CifarResNet, blocks=1, widths=(64, 128, 256), shortcut="B", pool=4),
    "resnet20-wide": partial(CifarResNet, blocks=3, widths=(64, 128, 256), shortcut="B", pool=4),
    "resnet32-wide": partial(CifarResNet, blocks=5, widths=(64, 128, 256), shortcut="B", pool=4),
    "wrn": WideResNet,
}
"""Builders `(input_shape, num_classes, **kwargs) -> nn.Module`; add a student with one line."""


def build_student(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs
) -> nn.Module:
    """Build student `name` for inputs (C, H, W) and `num_classes` logits.

    The module is built on the meta device and filled by `init_student` with seed 0, so building
    draws nothing from the global RNG; the training process draws its own init per seed.
    """
    if name not in STUDENTS:
        near = difflib.get_close_matches(name, STUDENTS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown student {name!r}; known: {sorted(STUDENTS)}.{hint}")
    if len(input_shape) != 3 or not all(int(d) == d and d > 0 for d in input_shape):
        raise ValueError(
            f"input_shape must be (C, H, W) of positive ints, e.g. (1, 28, 28), got {input_shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    with torch.device("meta"):
        model = STUDENTS[name](tuple(int(d) for d in input_shape), int(num_classes), **kwargs)
    model.to_empty(device="cpu")
    params, buffers = init_student(model, torch.Generator().manual_seed(0))
    model.load_state_dict({**params, **buffers})
    return model


def init_student(
    model: nn.Module, generator: torch.Generator
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Fresh (params, buffers) for `functional_call`, drawn only from `generator`.

    Conv weights: Kaiming normal, fan_out, ReLU gain (torchvision's and the WRN authors' choice),
    zero bias. Linear: PyTorch's default (Kaiming uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))).
    BatchNorm: weight 1, bias 0, running mean 0, running var 1, count 0. Values are drawn on the
    generator's device, then moved to the model's, so a seed gives the same student on any device.
    Tensors are plain leaves without requires_grad: torch.func does not need it.
    """
    params: dict[str, Tensor] = {}
    buffers: dict[str, Tensor] = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, like in module.named_parameters(recurse=False):
            params[dot + name] = _draw(module, name, like, generator).to(like.device)
        for name, like in module.named_buffers(recurse=False):
            buffers[dot + name] = _draw(module, name, like, generator).to(like.device)
    return params, buffers


def _draw(module: nn.Module, name: str, like: Tensor, generator: torch.Generator) -> Tensor:
    t = torch.empty(like.shape, dtype=like.dtype, device=generator.device)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return t.fill_(1) if name in ("weight", "running_var") else t.zero_()
    if isinstance(module, nn.Conv2d) and name == "weight":
        return nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=generator)
    if isinstance(module, nn.Conv2d) and name == "bias":
        return t.zero_()
    if isinstance(module, nn.Linear) and name == "weight":
        return nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator)
    if isinstance(module, nn.Linear) and name == "bias":
        bound = 1 / math.sqrt(module.in_features)
        return nn.init.uniform_(t, -bound, bound, generator=generator)
    raise TypeError(f"init_student has no rule for {type(module).__name__}.{name}")


def count_parameters(model: nn.Module | Mapping[str, Tensor]) -> int:
    """Number of trainable scalars in a model or a params dict (BatchNorm buffers excluded)."""
    tensors = model.values() if isinstance(model, Mapping) else model.parameters()
    return sum(t.numel() for t in tensors)
