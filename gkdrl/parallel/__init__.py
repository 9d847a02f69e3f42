"""gkdrl.parallel."""
