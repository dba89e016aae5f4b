"""The reproduction driver: models, generation, cache, results store, grid and the command line."""
