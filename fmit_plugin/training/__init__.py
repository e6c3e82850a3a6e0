"""Training: the trainer, optimizers and metrics."""
