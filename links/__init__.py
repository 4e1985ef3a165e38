"""The link format and the sender's library: the token, the keys that seal it, and rewriting a message's links."""
