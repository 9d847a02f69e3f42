"""gkdrl.agents."""
