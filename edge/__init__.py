"""The redirect edge. `edge.token` is the link token codec, importable by senders."""
