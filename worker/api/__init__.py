"""The public REST API tier (``/v1.0/speakings``): validates, authenticates, and drives
the workers through the Redis contract of docs/redis-protocol.md."""
