"""The pure-PyTorch reference of every op in one namespace (`fastdstn.ops.reference.stn_linear_dual`, …): the
ground truth for tests and benchmarks. Each family's reference lives in its folder; this module only names them.
"""
from .attention.reference import attention, attention_dual
from .dense.reference import hyper_projection, stn_conv2d, stn_conv2d_dual, stn_linear, stn_linear_dual
from .dropout.reference import dropout_dual, dropout_keep_mask
from .embedding.reference import stn_embedding, stn_embedding_dual
from .lstm_cell.reference import lstm_cell_dual
from .penalty.reference import penalty_row_combination, penalty_row_sums
from .pooling.reference import max_pool2d_dual, max_pool2d_dual_backward

__all__ = ["hyper_projection", "stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "stn_embedding",
           "stn_embedding_dual", "lstm_cell_dual", "dropout_keep_mask", "dropout_dual", "attention_dual", "attention",
           "penalty_row_sums", "penalty_row_combination", "max_pool2d_dual", "max_pool2d_dual_backward"]
