"""Kafka plumbing: embedded broker, topic admin, and our own Bytewax source and sink."""
