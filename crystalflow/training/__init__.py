"""Training: configuration, the trainer, run files and model loading, devices and seeds, data-parallel set-up."""
