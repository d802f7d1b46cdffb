"""Synthetic visitor traffic with exact ground truth, sent through the real ingestion API."""
