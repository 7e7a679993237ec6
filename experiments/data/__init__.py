"""Dataset builders, one module per runner's kind of data."""
