"""Hydra plugin of clarena-demo-configs: puts its config tree on Hydra's search path."""
