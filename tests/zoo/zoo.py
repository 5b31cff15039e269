"""The models people bring, in tiny configurations (no downloads), with their tunable sites: what
tests/zoo/test_zoo.py converts and checks, and benchmarks/bench_zoo.py times.

Each entry builds (original model, inputs, targets, loss_fn, dropout mapping, hyperparameters). Every model also
tunes a per-batch weight decay "wd". torchvision models come from their real constructors on 32×32 images:
resnet18 at full width, mobilenet_v3_small at width 0.25, EfficientNet, ConvNeXt, ViT and Swin with small widths and
depths (their module types are those of efficientnet_b0, convnext_tiny, vit_b_16 and swin_t; full widths make the
float64 checks of depthwise convolutions take seconds per forward). Hugging Face models come from tiny configs and take
a tensor of token ids through a wrapper that returns the logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from fastdstn import Hyper

IMAGE = (3, 32, 32)
CLASSES = 10
VOCAB, SEQ = 37, 8


@dataclass
class ZooModel:
    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: Callable
    dropout: Dict[str, str] = field(default_factory=dict)
    hypers: List[Hyper] = field(default_factory=list)


def _rate(name: str) -> Hyper:
    return Hyper(name, 0.1, 0.0, 0.9)


def _hypers(dropout: Dict[str, str]) -> List[Hyper]:
    names = list(dict.fromkeys(dropout.values()))
    return [_rate(n) for n in names] + [Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)]


def _image_model(model: nn.Module, batch: int, dropout: Dict[str, str]) -> ZooModel:
    g = torch.Generator().manual_seed(0)
    return ZooModel(model, torch.randn(batch, *IMAGE, generator=g), torch.randint(0, CLASSES, (batch,), generator=g),
                    F.cross_entropy, dropout, _hypers(dropout))


def _language(outputs, targets):
    return F.cross_entropy(outputs.flatten(0, 1), targets.flatten())


def _token_model(model: nn.Module, batch: int, dropout: Dict[str, str]) -> ZooModel:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (batch, SEQ + 1), generator=g)
    return ZooModel(model, tokens[:, :-1], tokens[:, 1:], _language, dropout, _hypers(dropout))


class Logits(nn.Module):
    """A Hugging Face model called on a tensor of token ids, returning its logits (SelfTuning passes one tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


class GPT(nn.Module):
    """A decoder from nn.TransformerEncoder with a causal mask and a learned positional embedding of arange(T)."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, heads: int = 2, layers: int = 2, context: int = SEQ):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.drop = nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps = ids.shape[1]
        x = self.drop(self.tokens(ids) + self.positions(torch.arange(steps, device=ids.device)))
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=ids.device)
        return self.head(self.blocks(x, mask=mask, is_causal=True))


def resnet18(batch: int = 4):
    import torchvision
    return _image_model(torchvision.models.resnet18(num_classes=CLASSES), batch, {})


def mobilenet_v3_small(batch: int = 4):
    import torchvision
    model = torchvision.models.mobilenet_v3_small(num_classes=CLASSES, width_mult=0.25)
    return _image_model(model, batch, {"classifier.2": "drop_fc"})


def efficientnet(batch: int = 4):
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig
    blocks = [MBConvConfig(1, 3, 1, 8, 8, 1), MBConvConfig(6, 3, 2, 8, 16, 2), MBConvConfig(6, 5, 2, 16, 24, 1)]
    return _image_model(EfficientNet(blocks, dropout=0.2, num_classes=CLASSES), batch, {"classifier.0": "drop_fc"})


def convnext(batch: int = 4):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    model = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 2)], num_classes=CLASSES)
    return _image_model(model, batch, {})


def vit(batch: int = 4):
    from torchvision.models import VisionTransformer
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=CLASSES, dropout=0.1, attention_dropout=0.1)
    return _image_model(model, batch, {"encoder.dropout": "drop_embed", "encoder.layers.*.self_attention": "drop_attn",
                                   "encoder.layers.*.dropout": "drop_resid", "encoder.layers.*.mlp.[24]": "drop_resid"})


def swin(batch: int = 4):
    from torchvision.models import SwinTransformer
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                            num_classes=CLASSES, dropout=0.1, attention_dropout=0.1)
    return _image_model(model, batch, {"features.[13].*.attn": "drop_attn", "features.[13].*.mlp.[24]": "drop_resid"})


def gpt2(batch: int = 4):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=16, n_layer=2, n_head=2)
    return _token_model(Logits(GPT2LMHeadModel(config)), batch, {
        "model.transformer.drop": "drop_embed", "model.transformer.h.*.attn": "drop_attn",
        "model.transformer.h.*.attn.resid_dropout": "drop_resid", "model.transformer.h.*.mlp.dropout": "drop_resid"})


def bert(batch: int = 4):
    from transformers import BertConfig, BertForMaskedLM
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=SEQ)
    return _token_model(Logits(BertForMaskedLM(config)), batch, {
        "model.bert.embeddings.dropout": "drop_embed", "model.bert.encoder.layer.*.attention.self": "drop_attn",
        "model.bert.encoder.layer.*.output.dropout": "drop_resid",
        "model.bert.encoder.layer.*.attention.output.dropout": "drop_resid"})


def llama(batch: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
                         attention_dropout=0.1)
    return _token_model(Logits(LlamaForCausalLM(config)), batch, {"model.model.layers.*.self_attn": "drop_attn"})


def gpt(batch: int = 4):
    return _token_model(GPT(), batch, {"drop": "drop_embed", "blocks.layers.*.self_attn": "drop_attn",
                                   "blocks.layers.*.dropout[12]": "drop_resid"})


ZOO: Dict[str, Callable[[int], ZooModel]] = {
    "resnet18": resnet18, "mobilenet_v3_small": mobilenet_v3_small, "efficientnet": efficientnet,
    "convnext": convnext, "vit": vit, "swin": swin, "gpt2": gpt2, "bert": bert, "llama": llama, "gpt": gpt,
}


def build(name: str, batch: int = 4) -> ZooModel:
    torch.manual_seed(0)
    return ZOO[name](batch)
