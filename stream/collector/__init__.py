"""The ingestion edge (DESIGN.md section 9): HTTP in, section 3 events out to Kafka.

Pure modules (write_keys, batch, touch, webhooks, signatures) decide what a
request means; ``sender`` is the Kafka adapter and ``app`` the aiohttp routes.
"""
