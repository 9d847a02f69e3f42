"""gkdrl.reward_models."""
