"""The data stages: plain functions from manifests and parameters to manifests."""
