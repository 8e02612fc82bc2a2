"""The config tree of clarena-demo-configs (package data read by Hydra)."""
