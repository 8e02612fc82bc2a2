"""The Hydra config tree shipped with clarena: ``pkg://clarena.experiments.configs``."""
