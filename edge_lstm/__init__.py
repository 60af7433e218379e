"""edgelstm: sensor logs to fault alerts on edge gateways (training side and CLI)."""

__version__ = "0.1.0"
