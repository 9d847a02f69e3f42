"""gkdrl.envs."""
