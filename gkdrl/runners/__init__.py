"""gkdrl.runners: absl-flag programs.

  python -m gkdrl.runners.train         train one agent (the main job)
  python -m gkdrl.runners.evaluate      evaluate a checkpoint / HF directory
  python -m gkdrl.runners.sweep_alpha   one gkd_rl training per alpha
  python -m gkdrl.runners.prepare       build the built-in teacher/student

The library pieces the programs share (the training loop, checkpoints, the
built-in models) are importable: `gkdrl.runners.loop`, `.checkpointing`,
`.builtin`, `.setup`.
"""

# The programs and their modules are imported by module, not re-exported.
__all__ = []
