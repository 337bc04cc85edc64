"""Predictions on disk, sampling, baselines, matching, metrics and evaluation."""
