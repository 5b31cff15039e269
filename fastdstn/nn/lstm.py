"""StnLSTM: a multi-layer LSTM whose input-to-hidden and hidden-to-hidden maps are STN linears.

The input projections of all time steps are one op call (one GEMM pair) per layer; the time loop
then runs the small hidden-to-hidden projection and the pointwise cell. In a dual (Δ-STN) feed
primal and tangent travel explicitly through `lstm_cell_dual`, so the loop builds no forward-AD
bookkeeping.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..hyper.feed import Feed, current_feed
from .base import join_dual, rows_for, split_dual
from .dual_routes import one_call
from .dropout import StnLockedDropout, draw_seed, per_example_rate
from .linear import StnLinear

Tensor = torch.Tensor


class StnLSTM(nn.Module):
    """Like nn.LSTM(input_size, hidden_size, num_layers, batch_first): forward(x, hx=None) returns
    (output, (h_n, c_n)). Gates in the order i, f, g, o; the hidden-to-hidden map carries no bias
    (nn.LSTM's two biases add up to the input-to-hidden one).

    dropconnect: name of a per-batch hyperparameter, the DropConnect rate of the hidden-to-hidden
    weights (one mask per batch, on general and response weights alike).
    layer_dropout: name of a hyperparameter, locked dropout between stacked layers."""

    def __init__(self, input_size: int, hidden_size: int, num_hypers: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropconnect: Optional[str] = None,
                 layer_dropout: Optional[str] = None) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first = batch_first
        self.dropconnect = dropconnect
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.ih = nn.ModuleList(StnLinear(n, 4 * hidden_size, num_hypers, bias=bias) for n in sizes)
        self.hh = nn.ModuleList(StnLinear(hidden_size, 4 * hidden_size, num_hypers, bias=False) for _ in sizes)
        self.layer_dropout = StnLockedDropout(layer_dropout) if layer_dropout else None

    def _hh_weights(self, layer: int, feed: Optional[Feed], batch: int) -> Tuple[Tensor, Tensor]:
        """(W_g, W_r) of the hidden-to-hidden map, both under the batch's DropConnect mask."""
        hh = self.hh[layer]
        if not (self.training and self.dropconnect and feed is not None and feed.values):
            return hh.weight, hh.response_weight
        rate = per_example_rate(feed, self.dropconnect, batch, f"StnLSTM(dropconnect={self.dropconnect!r})",
                                hh.weight)[:1]
        keep = ops.reference.dropout_keep_mask(hh.weight.shape, rate, 0, draw_seed(), hh.weight.device,
                                               hh.weight.dtype)
        # One draw for the batch: the first (and only) mask row scales every weight row alike.
        return hh.weight * keep, hh.response_weight * keep

    def _layer(self, layer: int, x: Tensor, x_t: Optional[Tensor], state: Tuple[Tensor, Tensor],
               W_hh: Tensor, W_hh_r: Tensor, response: Optional[Feed]):
        """Runs one layer over time-major x (T, B, in); `response` is the feed when it asks for the
        response branch, else None; tangents are None outside a dual feed."""
        steps, batch = x.shape[0], x.shape[1]
        ih, hh = self.ih[layer], self.hh[layer]
        if response is None:
            gates_x, gates_x_t = F.linear(x, ih.weight, ih.bias), None
        else:
            h_rows = rows_for(response.h, (steps, batch, 1), batch_dim=1)
            flat = x.reshape(-1, x.shape[-1])
            ih_args = (ih.weight, ih.bias, ih.response_weight, ih.response_bias, ih.hyper_proj)
            if response.dual:
                gates_x, gates_x_t = ops.stn_linear_dual(
                    flat, None if x_t is None else x_t.reshape(flat.shape), h_rows, *ih_args)
                gates_x_t = gates_x_t.reshape(steps, batch, -1)
            else:
                gates_x, gates_x_t = ops.stn_linear(flat, h_rows, *ih_args), None
            gates_x = gates_x.reshape(steps, batch, -1)
        h, c = state
        h_t = c_t = None
        outputs, output_tangents = [], []
        for step in range(steps):
            if response is None:
                gates, gates_t = gates_x[step] + F.linear(h, W_hh), None
            elif response.dual:
                g, g_t = ops.stn_linear_dual(h, h_t, response.h, W_hh, None, W_hh_r, None, hh.hyper_proj)
                gates, gates_t = gates_x[step] + g, gates_x_t[step] + g_t
            else:
                gates = gates_x[step] + ops.stn_linear(h, response.h, W_hh, None, W_hh_r, None, hh.hyper_proj)
                gates_t = None
            h, h_t, c, c_t = ops.lstm_cell_dual(gates, gates_t, c, c_t)
            outputs.append(h)
            output_tangents.append(h_t)
        out = torch.stack(outputs)
        out_t = torch.stack(output_tangents) if h_t is not None else None
        return out, out_t, (h, h_t), (c, c_t)

    @one_call
    def forward(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None):
        feed = current_feed()
        batch_dim = 0 if self.batch_first else 1
        if x.dim() == 2:
            return self._unbatched(x, hx, feed)
        batch = x.shape[batch_dim]
        response = self.ih[0].active_feed(x, batch_dim, batched_dims=3)
        if response is not None:            # the loop below runs every layer's maps through the ops directly
            for layer in (*self.ih, *self.hh):
                layer.fed = True
        dual = response is not None and response.dual
        x, x_t = split_dual(x) if dual else (x, None)
        if response is not None and response.h.dtype != x.dtype:
            response = dataclasses.replace(response, h=response.h.to(x.dtype))
        if self.batch_first:
            x, x_t = x.transpose(0, 1), (None if x_t is None else x_t.transpose(0, 1))
        if hx is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            hx = (zeros, zeros)
        h0, c0 = (split_dual(t)[0] for t in hx)   # a carried-over state has no tangent
        h_n, h_n_t, c_n, c_n_t = [], [], [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.layer_dropout is not None:
                x = self.layer_dropout(join_dual(x, x_t))
                x, x_t = split_dual(x) if dual else (x, None)
            W_hh, W_hh_r = self._hh_weights(layer, feed, batch)
            x, x_t, (h, h_t), (c, c_t) = self._layer(layer, x, x_t, (h0[layer], c0[layer]), W_hh, W_hh_r, response)
            h_n.append(h), h_n_t.append(h_t), c_n.append(c), c_n_t.append(c_t)
        if self.batch_first:
            x, x_t = x.transpose(0, 1), (None if x_t is None else x_t.transpose(0, 1))

        def stacked(primals, tangents):
            return join_dual(torch.stack(primals), None if tangents[-1] is None else torch.stack(tangents))

        return join_dual(x, x_t), (stacked(h_n, h_n_t), stacked(c_n, c_n_t))

    def _unbatched(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]], feed: Optional[Feed]):
        """An unbatched (T, input_size) sequence, as nn.LSTM takes it; inside a feed it has no example to give
        its own h."""
        if feed is not None and feed.h is not None:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"StnLSTM({self.extra_repr()}): inside a feed the input must be batched, {layout}, with "
                             f"one example per row of h; received an unbatched input of shape {tuple(x.shape)}")
        batch_dim = 0 if self.batch_first else 1
        state = None if hx is None else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        out, (h, c) = self(x.unsqueeze(batch_dim), state)
        return out.squeeze(batch_dim), (h.squeeze(1), c.squeeze(1))

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}, "
                f"dropconnect={self.dropconnect!r}")
