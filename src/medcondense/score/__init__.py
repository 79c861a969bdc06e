"""``medcondense score``: will distilling pay (before), and how good and how private is it (after).

Before distilling (``score data.h5 --ipc 1,10,50``), per IPC:

* the paper's indicator (Li et al. 2024): test accuracy of random real subsets, mean ± std over
  ``repeats``, and its ratio to a full-data model (evaluate's cached baselines,
  :mod:`medcondense.evaluate.baselines`);
* cheap proxies in random-ConvNet space, each with its cost in seconds (:mod:`.proxies`);
* a predicted gain of distillation over random, with its leave-one-dataset-out error, from the
  shipped calibration (:mod:`.predictor`).

After distilling (``score data.h5 syn.h5``) it adds MMD and coverage against the real classes
(:mod:`.distance`) and the privacy audit (:mod:`.privacy`). A ``subset`` file is real images by
construction: it is audited and reported as such, and ``--fail-on-copies`` fails for it too.

The stage itself (``run(config)``, ``render``, the option checks) is :mod:`.pipeline`; nothing is
imported here, so ``import medcondense.score`` stays cheap (no torch).
"""
