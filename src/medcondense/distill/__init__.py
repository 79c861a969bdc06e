"""Distillation: DC, DSA and DM as strategies of one engine, plus coreset baselines.

* :mod:`medcondense.distill.registry` -- the method table (``METHODS``: name -> ``"module:Class"``,
  ``CORESETS``), without torch;
* :mod:`medcondense.distill.base` -- the :class:`~medcondense.distill.base.Method` API and the
  shared loop (real batches per class, the synthetic tensor and its optimizer, method state,
  checkpoints, resume, class shards);
* :mod:`medcondense.distill.dc`, :mod:`~medcondense.distill.dsa`, :mod:`~medcondense.distill.dm`
  -- the methods, each supplying its loss;
* :mod:`medcondense.augment` (beside nets and train, shared with evaluate) -- differentiable
  Siamese augmentation;
* :mod:`medcondense.distill.coreset` -- random, herding and k-center selection;
* :mod:`medcondense.distill.pipeline` -- the ``medcondense distill`` stage (``run(config)``).

Nothing is imported here, so importing the package stays cheap.
"""
