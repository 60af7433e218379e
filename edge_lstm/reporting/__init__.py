"""Training-side tooling that drives artifacts and the gateway: scoring artifacts on a data
split (`evaluate`, `predictors`), the demo's live stage (`demo_live`) and its report.

It may import the edge_lstm core, `converters` and `runtime`; never `edge_lstm.commands`,
`edge_lstm.cli` or `bench`. The CLI commands import it inside the command that runs.
"""
