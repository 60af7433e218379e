"""The offline teacher: a bidirectional LSTM with additive attention pooling over time.

It sees the whole window in both directions, which makes it accurate but not streamable;
its soft targets train the causal student. With `window_stats` its head also gets the window's
statistics (`window_stats.py`), as the student's can.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edge_lstm.config import TeacherConfig
from edge_lstm.models.window_stats import n_stats_features, window_stats


class AttentionPooling(nn.Module):
    """Additive (Bahdanau) attention: a softmax over time weights the sequence into one vector."""

    def __init__(self, in_size: int, attention_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def weights(self, seq: Tensor) -> Tensor:
        """seq[B, W, D] -> weights[B, W, 1]: non-negative, summing to 1 over time."""
        return torch.softmax(self.score(torch.tanh(self.proj(seq))), dim=1)

    def forward(self, seq: Tensor) -> Tensor:
        """seq[B, W, D] -> pooled[B, D]."""
        return (self.weights(seq) * seq).sum(dim=1)


class Teacher(nn.Module):
    """BiLSTM → LayerNorm → attention pooling → LayerNorm → dropout (+ window statistics) →
    linear or one-hidden-layer head."""

    def __init__(self, n_features: int, n_classes: int, cfg: TeacherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._n_features = n_features
        self._n_classes = n_classes
        self.lstm = nn.LSTM(
            input_size=n_features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        width = 2 * cfg.hidden_size
        self.seq_norm = nn.LayerNorm(width)
        self.attention = AttentionPooling(width, cfg.attention_size)
        self.pooled_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.stats_norm: nn.Module | None = None
        if cfg.window_stats:
            self.stats_norm = nn.LayerNorm(n_stats_features(n_features))
            width += n_stats_features(n_features)
        self.head: nn.Module = nn.Linear(width, n_classes)
        if cfg.head_hidden > 0:  # non-linear in the statistics, as trees on them are
            self.head = nn.Sequential(
                nn.Linear(width, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, n_classes)
            )
        self._init_lstm()

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def _init_lstm(self) -> None:
        """Orthogonal recurrent and Xavier input weights per gate; forget-gate bias 1."""
        hidden = self.cfg.hidden_size
        for name, param in self.lstm.named_parameters():
            with torch.no_grad():
                if name.startswith("weight_hh"):
                    for gate in param.chunk(4, dim=0):
                        nn.init.orthogonal_(gate)
                elif name.startswith("weight_ih"):
                    for gate in param.chunk(4, dim=0):
                        nn.init.xavier_uniform_(gate)
                elif name.startswith("bias_ih"):
                    param.zero_()
                    param[hidden : 2 * hidden] = 1.0
                else:
                    param.zero_()

    def _sequence(self, x: Tensor) -> Tensor:
        """x[B, W, F] -> the normalized BiLSTM states[B, W, 2H] that attention pools."""
        seq, _ = self.lstm(x - x[:, :1] if self.cfg.relative_input else x)
        return self.seq_norm(seq)

    def attention_weights(self, x: Tensor) -> Tensor:
        """x[B, W, F] -> how much each time step counts in the pooled vector, [B, W]."""
        return self.attention.weights(self._sequence(x)).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """x[B, W, F] -> logits[B, C]."""
        pooled = self.dropout(self.pooled_norm(self.attention(self._sequence(x))))
        if self.stats_norm is not None:
            # never dropped: a single channel's log std can be the whole evidence for a class
            pooled = torch.cat([pooled, self.stats_norm(window_stats(x))], dim=1)
        return self.head(pooled)
