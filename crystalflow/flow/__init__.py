"""Probability paths, the crystallization model and the ODE solver."""
