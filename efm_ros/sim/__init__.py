"""The embedded robot: a LanguageTable-like pushing table, its instructions and its demonstrator.

- :mod:`efm_ros.sim.instructions`: task families, every instruction string, parsing, ground-truth
  success (pure numpy; cheap to import for learners that only need the instruction set).
- :mod:`efm_ros.sim.tabletop`: :class:`~efm_ros.sim.tabletop.TabletopRobot` (pymunk + OpenCV),
  the ``"blocks"`` table and the ``"novel_bar"`` variant.
- :mod:`efm_ros.sim.demonstrator`: the scripted demonstrator and the episode runner.

Nothing is imported here, so ``import efm_ros.sim.instructions`` does not load pymunk or OpenCV.
"""
