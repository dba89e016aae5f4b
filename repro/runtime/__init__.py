"""Runtime layer: models, generation, caches, chat templates, packing, scoring, atomic storage, provenance.

The bottom layer: it imports nothing from evals, methods or the driver.
"""
