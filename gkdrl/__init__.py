"""gkdrl: on-policy distillation (GKD) combined with reinforcement learning.

Subpackages:
  losses         divergences, policy-gradient terms and the alpha objective.
  networks       Haiku language models and their weights.
  sampling       jitted batched generation with a KV cache.
  envs           the text-generation environment.
  tasks          the data: built-in tasks with oracles, hub datasets.
  validation     argument checks with one message style.
  reward_models  rewards on finished sequences.
  agents         SFT, SeqKD, supervised KD, GKD, RL and GKD+RL.
  evaluation     task rewards, ROUGE, teacher KL and Self-BLEU of a model.
  runners        absl-flag programs.
  parallel       device meshes and sharding rules.
"""

__version__ = "0.1.0"
