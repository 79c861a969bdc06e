"""Dataset Condensation with Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

DC's gradient matching where, per class and step, one augmentation is sampled and applied with
the *same* parameters to the real batch and to the synthetic batch (so the gradients compare
like with like), and the inner loop trains the network on augmented synthetic images. The
engine samples the parameters; :class:`~medcondense.distill.dc.DCMethod` applies them.
"""

from __future__ import annotations

from medcondense.distill.dc import DCMethod


class DSAMethod(DCMethod):
    """DC with differentiable Siamese augmentation (reference strategy ``color_crop_cutout_flip_scale_rotate``)."""

    name = "dsa"
    uses_augmentation = True
