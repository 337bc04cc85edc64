"""Shared by every layer: errors, atomic file writing, package resources, the vocabulary."""
