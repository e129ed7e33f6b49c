"""Kafka consumers: router (envelopes, outbox) and analytics (projections)."""
