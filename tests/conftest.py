"""Fixtures shared by every tier; the real-service ones live in their own plugin modules."""

pytest_plugins = ["tests.postgres_fixtures", "tests.kafka_fixtures"]
