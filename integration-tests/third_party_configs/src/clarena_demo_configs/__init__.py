"""Example third-party configs for clarena, on Hydra's search path as ``pkg://clarena_demo_configs/conf``."""
