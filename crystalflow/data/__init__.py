"""Datasets: noise, the build pipeline, shards, the reader, the COD-Cluster17 CSV format."""
