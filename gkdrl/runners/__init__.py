"""gkdrl.runners."""
