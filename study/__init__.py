"""Hyperparameter studies of the cvae model: a TOML study file -> Ray Tune + Optuna -> results/."""
