"""eebench: benchmarking and analysis for dynamic early-exit image classifiers.

The package root imports nothing heavy, so that commands working on cached
logits (``sweep``, ``report``, ``store``) start without torch.
"""

__version__ = "0.1.0"
