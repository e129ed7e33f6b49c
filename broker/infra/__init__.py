"""Outside systems behind small interfaces: PostgreSQL, Kafka, HTTP, retry backoff."""
