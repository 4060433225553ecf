"""radiopath: graph neural networks for spatial radiopathomics.

Patch embeddings from whole-slide images (2-D) and CT volumes (3-D) become spatial
graphs; graph encoders with a variational Normal-Gamma sparsity prior (SPARRA) or the
mean / gated-attention baselines aggregate them into patient embeddings, which
downstream survival models turn into risks.

The pipeline is a chain of stages with files between them (see ``INTERFACE.md``)::

    io -> extract -> graph -> models + training -> evaluation -> viz / report
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
