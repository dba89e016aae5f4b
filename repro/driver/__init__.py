"""Driver layer: recipes, the grid, one cell, result assembly and validation, and the one-off work the command
line asks for (judging a file of responses, evaluating one model, exporting targets).

It sits above methods and evals and below the command line and the report.
"""
