"""The background compression: the compress job, the queues that run it (RQ or threads), the
policy that picks a codec, lossy copies and the retention of originals. Codecs themselves are
the imaging library's (scp_node.imaging)."""
