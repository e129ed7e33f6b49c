"""Infrastructure ejx runs itself on a developer machine or CI: Kafka and PostgreSQL under the state dir."""
