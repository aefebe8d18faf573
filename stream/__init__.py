"""funnel stream: real-time funnel and sales-pipeline analytics on Kafka."""

__version__ = "0.1.0"
