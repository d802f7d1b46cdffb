"""Landing: a Kafka consumer group writing the raw lake on the object store.

It plays the Kafka Connect S3 sink's part: records of heatmap.events.raw become
one-event-a-line JSON part files (and, in parallel, Parquet part files) under
dt=/hour=/client_id= folders, effectively once. See docs/ARCHITECTURE.md, "Landing".
"""
