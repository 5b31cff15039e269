"""Small float64 models shared by the tests: an MLP, a CNN with BatchNorm and a residual block, and
an embedding + LSTM language model, each with tuned dropout sites."""
import torch
from torch import nn

from fastdstn import Hyper, HyperSpace
from fastdstn.nn import (StnConv2d, StnDropout, StnDropout2d, StnEmbedding, StnLinear, StnLockedDropout,
                         StnLSTM)


def small_space() -> HyperSpace:
    return HyperSpace([Hyper("drop_in", 0.2, 0.0, 0.9), Hyper("drop_hidden", 0.3, 0.0, 0.9),
                       Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])


class MLP(nn.Sequential):
    def __init__(self, H: int):
        super().__init__(StnDropout("drop_in"), StnLinear(12, 16, H), nn.Tanh(), StnDropout("drop_hidden"),
                         StnLinear(16, 16, H), nn.ReLU(), StnLinear(16, 4, H))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, H: int):
        super().__init__()
        self.conv1 = StnConv2d(channels, channels, 3, H, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = StnConv2d(channels, channels, 3, H, padding="same")
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class CNN(nn.Module):
    def __init__(self, H: int):
        super().__init__()
        self.stem = StnConv2d(2, 4, 3, H, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.block = ResidualBlock(4, H)
        self.drop = StnDropout2d("drop_hidden")
        self.head = StnLinear(4 * 2 * 2, 3, H)

    def forward(self, x):
        x = self.drop(self.block(torch.relu(self.bn(self.stem(x)))))
        x = nn.functional.max_pool2d(x, 2)
        return self.head(x.flatten(1))


class LanguageModel(nn.Module):
    """Time-major (T, B) tokens → (T, B, vocab) logits."""

    def __init__(self, H: int, vocab: int = 11, dim: int = 6):
        super().__init__()
        self.embed = StnEmbedding(vocab, dim, H, batch_dim=1)
        self.drop = StnLockedDropout("drop_in")
        self.lstm = StnLSTM(dim, dim, H, num_layers=2, dropconnect="drop_hidden", layer_dropout="drop_hidden")
        self.out = StnLinear(dim, vocab, H, batch_dim=1)

    def forward(self, tokens):
        output, _ = self.lstm(self.drop(self.embed(tokens)))
        return self.out(output)


def randomize_hyper_proj(model: nn.Module) -> None:
    """V starts at 0 (h has no effect); tests move it so that every path is exercised."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("hyper_proj") or name.endswith("response_bias"):
                p.normal_(0, 0.5)


def mlp_problem():
    """(space, model, x, y) of the step tests: the float64 MLP with a random V, a (16, 12) batch of 4 classes."""
    torch.manual_seed(0)
    space = small_space()
    model = MLP(len(space)).double()
    randomize_hyper_proj(model)
    return space, model, torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 4, (16,))


def model_and_inputs(kind: str, H: int, batch: int = 5):
    torch.manual_seed(1)
    if kind == "mlp":
        model, x = MLP(H), torch.randn(batch, 12)
    elif kind == "cnn":
        model, x = CNN(H), torch.randn(batch, 2, 8, 8)
    else:
        model, x = LanguageModel(H), torch.randint(0, 11, (4, batch))
    model = model.double()
    randomize_hyper_proj(model)
    return model, (x.double() if x.is_floating_point() else x)
