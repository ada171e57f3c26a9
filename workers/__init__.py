"""Background work of the node: codecs, the compress job and the queues that run it."""
