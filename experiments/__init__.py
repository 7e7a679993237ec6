"""Runners for the paper's experiments and the one training engine they share (documented in README.md)."""

from experiments.configs import register_resolvers

register_resolvers()
