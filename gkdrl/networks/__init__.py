"""gkdrl.networks."""
