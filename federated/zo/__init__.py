"""Zeroth-order, seed-based training: perturbations from shared seeds, steps and replay."""
