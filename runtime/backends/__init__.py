"""Inference backends behind one `step(x, state) -> (logits, state)` interface."""
