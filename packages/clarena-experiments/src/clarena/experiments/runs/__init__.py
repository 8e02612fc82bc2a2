"""Managing runs: the run lock, model and resume files, the safe-config allowlist, resume, sweeps,
the run log and the run dir.

Its modules import nothing from here; ``clarena.experiments.<module>`` (the 0.1 path) names the
same module.
"""
