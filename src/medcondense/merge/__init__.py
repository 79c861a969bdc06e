"""``medcondense merge``: several sites' sets as one file (see :mod:`medcondense.merge.pipeline`)."""
