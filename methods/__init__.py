"""Fine-tuning methods: they differ only in the training targets they build (see methods.registry)."""
