"""The lab's pose-conditioned CVAE video predictor: model, data and a single training run."""
