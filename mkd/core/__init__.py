"""Plumbing every layer uses and that knows nothing of the replication: errors, atomic writes, the one hasher and the
one cache root. Imports nothing else from mkd."""
