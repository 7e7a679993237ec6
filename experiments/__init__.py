"""Runners for the paper's experiments and the one training engine they share (see spec/experiments.md)."""
