"""The stage library: one package per stage kind, one module per method."""
