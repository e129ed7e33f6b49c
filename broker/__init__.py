"""ejx core: settings, pure model, XML trust core, Kafka and PostgreSQL I/O, CLI."""
