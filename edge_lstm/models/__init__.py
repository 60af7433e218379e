"""The teacher (BiLSTM + attention) and the streamable student (causal GRU/LSTM)."""
