"""STN modules, per-example regularizers, parameter groups and model conversion."""
from .attention_routing import dual_attention
from .base import StnLayer
from .conv import StnConv2d
from .convert import convert
from .dropout import StnDropout, StnDropout2d, StnLockedDropout
from .embedding import StnEmbedding
from .groups import general_parameters, response_parameters, stn_layers, weight_penalty
from .linear import StnLinear
from .lstm import StnLSTM

__all__ = ["StnLayer", "StnLinear", "StnConv2d", "StnEmbedding", "StnLSTM", "StnDropout", "StnDropout2d",
           "StnLockedDropout", "convert", "general_parameters", "response_parameters", "stn_layers",
           "weight_penalty", "dual_attention"]
