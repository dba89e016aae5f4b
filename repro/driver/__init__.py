"""Driver layer: recipes, the grid, one cell, result assembly and validation.

It sits above methods and evals and below the command line and the report.
"""
