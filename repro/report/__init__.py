"""Report layer: tables, figures, summaries and power analysis over result files."""
