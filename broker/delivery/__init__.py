"""Getting envelopes to receivers: the outbox, the relay, destinations (the SMEV 3 queue is in broker.smev3)."""
