"""Hydra plugin of clarena-experiments: puts clarena's config tree on Hydra's search path."""
