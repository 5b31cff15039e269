"""STN modules, per-example regularizers, parameter groups and model conversion."""
from .activations import GLU, Hardsigmoid
from .attention import attention
from .dual_routes import dual_routes
from .base import StnLayer
from .conv import StnConv2d
from .convert import convert
from .dropout import StnDropout, StnDropout2d, StnLockedDropout
from .embedding import StnEmbedding
from .groups import general_parameters, response_parameters, stn_layers, weight_penalty
from .linear import StnLinear
from .lstm import StnLSTM
from .multihead import StnMultiheadAttention
from .pooling import MaxPool2d
from .report import ConversionReport
from .swin import WindowAttention
from .transformer import ExplicitTransformerEncoderLayer

__all__ = ["StnLayer", "StnLinear", "StnConv2d", "StnEmbedding", "StnLSTM", "StnMultiheadAttention", "WindowAttention",
           "ExplicitTransformerEncoderLayer", "StnDropout", "StnDropout2d", "StnLockedDropout", "Hardsigmoid", "GLU",
           "MaxPool2d", "attention", "convert", "ConversionReport", "general_parameters", "response_parameters", "stn_layers",
           "weight_penalty", "dual_routes"]
