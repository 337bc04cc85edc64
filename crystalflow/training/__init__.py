"""Training: configuration, the trainer, checkpoints, data-parallel set-up."""
