"""Datasets: noise, the build pipeline, shards, the index (clusters.csv), the reader, the COD-Cluster17 CSV format."""
