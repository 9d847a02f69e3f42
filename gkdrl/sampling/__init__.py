"""gkdrl.sampling: jitted batched generation with a KV cache."""

from gkdrl.sampling.actor import Actor
from gkdrl.sampling.actor import ActorState
from gkdrl.sampling.actor import make_actor
from gkdrl.sampling.logits import filter_logits
from gkdrl.sampling.logits import sample_token
from gkdrl.sampling.logits import SamplingConfig
from gkdrl.sampling.sampler import Rollout
from gkdrl.sampling.sampler import rollout
from gkdrl.sampling.sampler import sample

__all__ = [
    "Actor", "ActorState", "filter_logits", "make_actor", "Rollout",
    "rollout", "sample", "sample_token", "SamplingConfig",
]
