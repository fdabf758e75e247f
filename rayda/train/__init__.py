"""Training: the one loop (workers), checkpoints, and the driver that runs TorchTrainer."""
