"""Learning: the paper's objectives (``objectives``), Stage 1 SFT and Stage 2 self-improvement.

``efm_ros.learn.objectives`` is importable without torch (its loss functions take torch tensors
and use only tensor methods), so robot-side nodes can share the reward/success/returns code.
"""
