"""Durable files: the spool of received instances and the store of compressed blobs."""
