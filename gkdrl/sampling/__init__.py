"""gkdrl.sampling."""
