"""Litestar ingestion API: validated pointer-event batches to Kafka, and the demo client."""
