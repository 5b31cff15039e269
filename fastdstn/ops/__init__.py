"""Functional STN ops: each checks its arguments, then runs the backend `dispatch` picks.

    stn_linear(x, h, Wg, bg, Wr, br, V)                     -> y
    stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)          -> (y, ẏ)
    stn_conv2d(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups)          -> y
    stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups) -> (y, ẏ)
    stn_embedding(tokens, h, Eg, Er, V) / stn_embedding_dual(tokens, eps, Eg, Er, V)
    lstm_cell_dual(gates, gates_t, c, c_t)                  -> (h, ḣ, c, ċ)
    dropout_dual(x, xt, rate, seed, batch_dim, shared_dims) -> (y, ẏ)
    attention_dual(q, k, v, qt, kt, vt, attn_mask, is_causal, scale, dropout_rate, seed) -> (O, Ȯ)
    attention_with_dropout(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed)    -> O
    penalty_row_sums(g, r) / penalty_row_combination(a, g, b, r)   (the tuned L2 penalty's passes)
    max_pool2d_dual(x, xt, kernel_size, stride, padding, dilation, ceil_mode) -> (y, ẏ, indices)
    max_pool2d_dual_backward(grad_yt, indices, input_size)                    -> grad_xt

One folder per op family (dense, embedding, lstm_cell, dropout, attention, penalty, pooling) holds the family's
public functions (its __init__), its reference.py and one module per compiled backend; `dispatch.OPS` lists them.
Shapes and formulas: each family's reference.py, all of them gathered in `fastdstn.ops.reference`. Under
torch.autocast the ops take their tensors in the dtype of their rule (`fastdstn.ops.autocast`, which also puts
Autocast kernels on the compiled and Triton operators).
"""
from __future__ import annotations

from . import autocast, reference
from .attention import attention_dual, attention_with_dropout
from .dense import stn_conv2d, stn_conv2d_dual, stn_linear, stn_linear_dual
from .dispatch import available, current_backend, use_backend
from .dropout import dropout_dual
from .embedding import stn_embedding, stn_embedding_dual
from .lstm_cell import lstm_cell_dual
from .penalty import penalty_row_combination, penalty_row_sums
from .pooling import max_pool2d_dual, max_pool2d_dual_backward

autocast.register()

__all__ = ["stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "stn_embedding",
           "stn_embedding_dual", "lstm_cell_dual", "dropout_dual", "attention_dual", "attention_with_dropout",
           "penalty_row_sums", "penalty_row_combination", "max_pool2d_dual", "max_pool2d_dual_backward", "use_backend", "current_backend", "available", "reference"]
