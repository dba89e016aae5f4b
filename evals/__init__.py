"""In-domain tasks with their judges, and the generalization benchmarks."""
