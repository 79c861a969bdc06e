"""``medcondense evaluate``: train fresh networks on a (distilled) set, test them on real data.

The stage is split by concern; nothing is imported here, so ``import medcondense.evaluate``
stays cheap (no torch) and ``score`` can take the pieces it reuses without the stage:

* :mod:`medcondense.evaluate.data` -- the judge (:class:`~.data.RealData`, :func:`~.data.load_real`)
  and the sets to judge (:class:`~.data.InputSet`, :func:`~.data.load_input`,
  :func:`~.data.check_matches_real`);
* :mod:`medcondense.evaluate.protocol` -- how a network is trained and tested
  (:func:`~.protocol.evaluate_images`, :func:`~.protocol.train_augment`, the resolved
  :class:`~.protocol.Plan`);
* :mod:`medcondense.evaluate.baselines` -- random-subset and full-train-split baselines and their
  cache (:func:`~.baselines.real_baselines`, :class:`~.baselines.BaselineCache`,
  :func:`~.baselines.random_subset`, :func:`~.baselines.full_baseline_epochs`);
* :mod:`medcondense.evaluate.report` -- the tables and the accuracy-vs-IPC plot;
* :mod:`medcondense.evaluate.sites` -- cross-site evaluation (every net tested at every site);
* :mod:`medcondense.evaluate.pipeline` -- the stage, ``run(config)`` (what the CLI calls).

For every input set, K fresh networks (``--models``, default 5; model k is seeded with
``seed + k``) are trained from scratch and tested on the real file's test split (or on one site's
test images with ``--test-site``). The same is done, in the same report, for two baselines:
a random real subset with the input's images per class (``random``; model k gets its own subset,
drawn with ``seed + k``) and the full real train split (``full``). "Recovery" is input / full.

Protocol (the reference's ``evaluate_synset``): SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 256, lr x0.1 at half the epochs; 300 epochs, or 1000 with ``--train-aug dsa`` (one DSA op
per batch, parameters drawn per image, as the reference trains evaluation nets); ``--epochs``
overrides both. Every image (input and real) is standardized with the REAL file's train-split
statistics. The ``full`` baseline has its own budget because 300 epochs over a whole hospital
archive is far too slow on a CPU: it trains ``min(epochs, ceil(full_steps / batches_per_epoch))``
epochs (``full_steps`` = 1000 SGD steps by default, ``--set evaluate.full_steps=N``), so it always
runs about ``full_steps`` steps whatever the data size; the report records what was used.
Baselines are cached in ``<real>.baselines.json`` (beside the real file, written atomically),
keyed by the real content hash and every option that changes their result, so they are trained once.

Report keys (``--json`` prints it, ``-o`` writes it; docs/evaluate.md is the long form)::

    real        {file, content_hash, class_names, test_images, test_site}
    protocol    {arch, models, epochs, train_aug, aug_ops, lr, momentum, weight_decay,
                 batch_size, seed, device, full_baseline: {epochs, step_budget, steps}}
    results     one per input:
                {file, kind, method, ipc, train_images, content_hash,
                 metrics: {accuracy, balanced_accuracy, auc: {mean, std, values},
                           per_class_recall: {mean: [...], std: [...]}},
                 baselines: {random: <metrics + ipc>, full: <metrics>},   (those asked for)
                 recovery: {accuracy, balanced_accuracy, auc}             (input mean / full mean),
                 protocol: {lr, train_aug, epochs, source}   (how this input trained: the report's
                           protocol, or an MTT set's learned_lr with DSA unless --lr/--train-aug)}
    output      the report path (or null); plot: the PNG path (or null)
    run_key     hash of the inputs and options (a rerun with the same key is skipped)
    provenance  tool and library versions, redacted command line, config, wall time


A baseline block has the same ``metrics`` layout plus ``epochs``, ``train_images`` and ``cached``.

Cross-site runs (several ``--real`` files, or ``--per-site``; :mod:`medcondense.evaluate.sites`)
keep this layout and add ``sites``, ``results[i].per_site[<site>] = {metrics, baselines,
recovery}``, ``results[i].mean_of_sites``, ``results[i].train_sites`` and ``site_baselines``;
``results[i].metrics`` are then pooled over every site's test images.
"""
