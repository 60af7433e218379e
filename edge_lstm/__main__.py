"""`python -m edge_lstm` runs the `edgelstm` CLI, e.g. under `torchrun ... -m edge_lstm`."""

from edge_lstm.cli import main

main()
