"""Teacher: size, initialisation, and that it can fit a small batch perfectly."""

from __future__ import annotations

import torch

from edge_lstm.config import TeacherConfig
from edge_lstm.models import Teacher, count_parameters
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


def test_attention_weights_time_steps() -> None:
    """Permuting time changes the BiLSTM states, so the output must depend on order."""
    torch.manual_seed(0)
    model = Teacher(4, 3, TeacherConfig(hidden_size=8, layers=1, attention_size=4)).eval()
    x = torch.randn(2, 10, 4)
    assert not torch.allclose(model(x), model(x.flip(1)))


def test_tiny_teacher_overfits_a_tiny_batch() -> None:
    seed_everything(0)
    batch = synthetic_windows(32, seed=3)
    x, y = torch.from_numpy(batch.x), torch.from_numpy(batch.y)
    model = Teacher(
        N_FEATURES,
        N_CLASSES,
        TeacherConfig(hidden_size=16, layers=1, dropout=0.0, attention_size=8),
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
