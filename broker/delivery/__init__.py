"""Getting envelopes to receivers: the outbox, the relay, destinations, the pull queue."""
