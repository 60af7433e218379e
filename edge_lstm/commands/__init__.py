"""One module per CLI command: click definitions only, implementations imported on use."""
