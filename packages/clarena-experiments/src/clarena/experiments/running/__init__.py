"""Running experiments: algorithms, pipelines, data, callbacks, results and the training aids.

Its modules import nothing from here (the package is a namespace of the experiment-running half);
``clarena.experiments.<module>`` (the 0.1 path) names the same module.
"""
