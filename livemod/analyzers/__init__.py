"""Analyzers: one module per signal. Each turns sampled frames into policy signals."""
