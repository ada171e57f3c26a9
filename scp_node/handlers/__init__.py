"""pynetdicom event handlers; each takes the event and the node, and returns DIMSE statuses."""
