"""Developer tools: local Kafka/PostgreSQL, the demo, simulation, reference receivers. Production never imports this."""
