"""Kafka consumers of the events topic on one consume loop: router (envelopes → outbox), analytics (projections), and replay through the router."""
