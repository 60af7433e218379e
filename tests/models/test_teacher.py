"""Teacher: size, initialisation, what its attention pooling does, and that it can fit a small
batch perfectly."""

from __future__ import annotations

import pytest
import torch

from edge_lstm.config import TeacherConfig
from edge_lstm.models import Teacher, count_parameters
from edge_lstm.models.teacher import AttentionPooling
from edge_lstm.models.window_stats import n_stats_features, window_stats
from edge_lstm.training import seed_everything
from tests.models.conftest import N_CLASSES, N_FEATURES, synthetic_windows


def test_demo_size_teacher_has_about_half_a_million_parameters() -> None:
    model = Teacher(24, 9, TeacherConfig(hidden_size=128, layers=2, attention_size=64))
    assert 500_000 <= count_parameters(model) <= 1_000_000
    assert model(torch.randn(3, 60, 24)).shape == (3, 9)


def test_initialisation() -> None:
    cfg = TeacherConfig(hidden_size=16, layers=2, attention_size=8)
    model = Teacher(5, 3, cfg)
    for name, param in model.lstm.named_parameters():
        if name.startswith("weight_hh"):
            for gate in param.detach().chunk(4):
                assert torch.allclose(gate @ gate.T, torch.eye(16), atol=1e-5), name
        if name.startswith("bias"):
            total = param.detach()
            expected = torch.zeros(64)
            if name.startswith("bias_ih"):
                expected[16:32] = 1.0
            assert torch.equal(total, expected), name


def _small_teacher(seed: int = 0) -> Teacher:
    torch.manual_seed(seed)
    return Teacher(4, 3, TeacherConfig(hidden_size=8, layers=1, attention_size=4)).eval()


def test_attention_weights_are_a_distribution_over_time() -> None:
    model = _small_teacher()
    x = torch.randn(5, 10, 4)
    with torch.no_grad():
        weights = model.attention_weights(x)
    assert weights.shape == (5, 10)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    # not uniform: the pooling is not a plain mean over time
    assert (weights.max(dim=1).values > 1.2 / 10).all()


def test_attention_picks_the_time_step_its_score_favours() -> None:
    """With the score reading one channel, the pooled vector is the step where it peaks."""
    pool = AttentionPooling(3, 3)
    with torch.no_grad():
        pool.proj.weight.copy_(torch.eye(3))
        pool.proj.bias.zero_()
        pool.score.weight.copy_(torch.tensor([[50.0, 0.0, 0.0]]))
    seq = torch.randn(2, 8, 3)
    seq[:, :, 0] = -1.0
    seq[0, 2, 0] = seq[1, 6, 0] = 1.0
    with torch.no_grad():
        pooled, weights = pool(seq), pool.weights(seq).squeeze(-1)
    assert weights.argmax(dim=1).tolist() == [2, 6]
    torch.testing.assert_close(pooled, torch.stack([seq[0, 2], seq[1, 6]]), atol=1e-3, rtol=0)


def test_permuting_time_permutes_the_weights_and_keeps_the_pooled_vector() -> None:
    torch.manual_seed(1)
    pool = AttentionPooling(6, 4)
    seq = torch.randn(3, 9, 6)
    order = torch.randperm(9)
    with torch.no_grad():
        torch.testing.assert_close(pool.weights(seq[:, order]), pool.weights(seq)[:, order])
        torch.testing.assert_close(pool(seq[:, order]), pool(seq))


def test_the_output_depends_on_the_attention_weights() -> None:
    """A zero score makes every step count 1/W: a different teacher, not the same output."""
    model = _small_teacher()
    x = torch.randn(4, 10, 4)
    with torch.no_grad():
        before = model(x)
        model.attention.score.weight.zero_()
        torch.testing.assert_close(model.attention_weights(x), torch.full((4, 10), 0.1))
        assert not torch.allclose(model(x), before, atol=1e-4)


def test_changing_one_reading_moves_the_attention() -> None:
    model = _small_teacher()
    x = torch.randn(2, 10, 4)
    changed = x.clone()
    changed[:, 7] += 5.0
    with torch.no_grad():
        weights, moved = model.attention_weights(x), model.attention_weights(changed)
    torch.testing.assert_close(moved.sum(dim=1), torch.ones(2))
    assert not torch.allclose(weights, moved, atol=1e-3)


def test_attention_is_trained() -> None:
    """The attention parameters get gradients from the classification loss."""
    model = _small_teacher().train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(6, 10, 4)), torch.arange(6) % 3)
    loss.backward()
    for name in ("proj.weight", "proj.bias", "score.weight"):
        grad = model.attention.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "extra", [{}, {"window_stats": True, "relative_input": True, "head_hidden": 16}]
)
def test_tiny_teacher_overfits_a_tiny_batch(extra: dict) -> None:
    """Plain, and with the window statistics, relative input and a hidden head layer."""
    seed_everything(0)
    batch = synthetic_windows(32, seed=3)
    x, y = torch.from_numpy(batch.x), torch.from_numpy(batch.y)
    model = Teacher(
        N_FEATURES,
        N_CLASSES,
        TeacherConfig(hidden_size=16, layers=1, dropout=0.0, attention_size=8, **extra),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert torch.nn.functional.cross_entropy(logits, y).item() < 0.05
    assert (logits.argmax(1) == y).all()


def test_dropout_spares_the_window_statistics() -> None:
    """In training the pooled LSTM vector is dropped out, the statistics reach the head whole:
    a frozen channel's log std can be the only evidence of its class."""
    torch.manual_seed(0)
    cfg = TeacherConfig(hidden_size=8, layers=1, dropout=0.9, attention_size=4, window_stats=True)
    model = Teacher(N_FEATURES, N_CLASSES, cfg).train()
    x = torch.from_numpy(synthetic_windows(16, seed=5).x)
    seen: list[torch.Tensor] = []
    model.head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    model(x)
    width = n_stats_features(N_FEATURES)
    pooled, stats = seen[0][:, :-width], seen[0][:, -width:]
    assert torch.equal(stats, model.stats_norm(window_stats(x)))
    assert (pooled == 0).float().mean() > 0.5  # the pooled vector is dropped out
