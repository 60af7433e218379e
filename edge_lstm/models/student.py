"""The streamable student: a causal GRU/LSTM that classifies from its last hidden state.

`forward` runs the fast fused nn.GRU/nn.LSTM over a whole window; `step` advances one reading
with the same weights written as plain gate arithmetic, so a traced `step` exports to a
loop-free ONNX graph (MatMul/Add/Mul/Sigmoid/Tanh) that every runtime and quantizer handles.
With `window_stats` the head also sees the window's exact running statistics
(`window_stats.py`), carried as one more state tensor, "stats"; with `relative_input` the cell
reads each reading minus the window's first, which that state holds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edge_lstm.config import StudentConfig
from edge_lstm.models.window_stats import (
    first_reading,
    n_stats_features,
    step_stats,
    window_stats,
    zero_stats_state,
)

State = tuple[Tensor, ...]


class Student(nn.Module):
    """Causal recurrent classifier; `step` W times from `initial_state` equals `forward`."""

    def __init__(self, n_features: int, n_classes: int, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        rnn_type = nn.GRU if cfg.cell == "gru" else nn.LSTM
        self.rnn = rnn_type(
            input_size=n_features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        width = cfg.hidden_size + (n_stats_features(n_features) if cfg.window_stats else 0)
        # hidden state in [-1, 1] beside statistics on the data's scale: one LayerNorm over both
        self.head_norm: nn.Module = nn.LayerNorm(width) if cfg.window_stats else nn.Identity()
        if cfg.head_hidden > 0:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(width, cfg.head_hidden),
                nn.ReLU(),
                nn.Linear(cfg.head_hidden, n_classes),
            )
        else:
            self.head = nn.Linear(width, n_classes)
        self._n_features = n_features
        self._n_classes = n_classes

    @property
    def cell(self) -> str:
        return self.cfg.cell

    @property
    def layers(self) -> int:
        return self.cfg.layers

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tensors, in the order `step` takes and returns them."""
        names = ("h",) if self.cell == "gru" else ("h", "c")
        return (*names, "stats") if self.cfg.window_stats else names

    def _logits(self, hidden: Tensor, stats: Tensor | None) -> Tensor:
        features = hidden if stats is None else torch.cat([hidden, stats], dim=1)
        return self.head(self.head_norm(features))

    def forward(self, x: Tensor) -> Tensor:
        """x[B, W, F] -> logits[B, C] from the last layer's hidden state after the last step."""
        out, _ = self.rnn(x - x[:, :1] if self.cfg.relative_input else x)
        return self._logits(out[:, -1], window_stats(x) if self.cfg.window_stats else None)

    def initial_state(self, batch: int) -> State:
        """Zero state: (h,) for a GRU, (h, c) for an LSTM, each [layers, batch, hidden], then
        with window_stats a zero 'stats' [1, batch, 5F + 1]."""
        weight = self.rnn.weight_hh_l0
        shape = (self.layers, batch, self.hidden_size)
        return tuple(
            zero_stats_state(self.n_features, batch, weight)
            if name == "stats"
            else weight.new_zeros(shape)
            for name in self.state_names
        )

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Advances every row by one reading x_t[B, F]; returns (logits[B, C], new state)."""
        stats = stats_state = None
        if self.cfg.window_stats:
            stats, stats_state = step_stats(x_t, state[-1])
        inp = x_t - first_reading(stats_state) if self.cfg.relative_input else x_t
        new_h: list[Tensor] = []
        new_c: list[Tensor] = []
        for k in range(self.layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{k}")
            w_hh = getattr(self.rnn, f"weight_hh_l{k}")
            b_ih = getattr(self.rnn, f"bias_ih_l{k}")
            b_hh = getattr(self.rnn, f"bias_hh_l{k}")
            if self.cell == "gru":
                h = _gru_cell(inp, state[0][k], w_ih, w_hh, b_ih, b_hh)
            else:
                h, c = _lstm_cell(inp, state[0][k], state[1][k], w_ih, w_hh, b_ih, b_hh)
                new_c.append(c)
            new_h.append(h)
            inp = h
        recurrent: State = (torch.stack(new_h),)
        if self.cell == "lstm":
            recurrent += (torch.stack(new_c),)
        if stats_state is None:
            return self._logits(inp, None), recurrent
        return self._logits(inp, stats), (*recurrent, stats_state)


def _gru_cell(
    x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> Tensor:
    """PyTorch's GRU (gate order r, z, n; reset applied to W_hn·h + b_hn)."""
    gi = torch.matmul(x, w_ih.t()) + b_ih
    gh = torch.matmul(h, w_hh.t()) + b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def _lstm_cell(
    x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """PyTorch's LSTM (gate order i, f, g, o)."""
    gates = torch.matmul(x, w_ih.t()) + b_ih + torch.matmul(h, w_hh.t()) + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new
