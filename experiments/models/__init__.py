"""Model builders, one module per runner's kind of model."""
