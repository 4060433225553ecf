r"""Spatial graphs from patch embeddings: WSI (2-D) and CT (3-D), scalable past 100k patches.

One implementation serves both modalities; only the dimension of the positions differs.
Positions are patch centres in physical units (``EmbeddingBag.physical_coords``: microns for
WSI when ``mpp`` is known, millimetres for CT with its voxel spacing, else pixels/voxels),
so anisotropic CT spacing is respected.

Two kinds of graph
------------------
**Clustered** (``method: clustered``; SPARRA, after SlideGraph, Lu et al. 2022): nodes are
clusters of patches grouped by spatial proximity *and* feature similarity -- average-linkage
agglomeration under :math:`d = 1 - e^{-\lambda_f |f_i - f_j| / s_f} e^{-\lambda_d |p_i - p_j|
/ s_p}`, evaluated on a sparse KD-tree neighbourhood (see :mod:`radiopath.graph.clustering`)
-- node feature = mean embedding of its patches, node position = their centroid, edges
between spatially neighbouring clusters (Delaunay triangulation of the centroids, or k-NN /
radius). **Patch-level** (``method: patch``; Patch-GCN, Chen et al. 2021): every patch a
node, k-NN or radius edges.

Every graph keeps ``assignment`` (patch -> node, file order), so node importance can be
traced back to patches, plus ``patch_count``, ``patch_coords``, ``modality``, ``units``,
``source`` and ``build_config``.

Defaults per modality (presets in ``radiopath/graph/presets``, mirrored in ``graphs/``)
-------------------------------------------------------------------------------------
Lengths are in patch pitches (``length_unit: pitch``; the pitch is the median distance to
the nearest other patch), which makes presets independent of magnification, patch size and
spacing; ``length_unit: physical`` switches to the bag's units.

====================  ======  =========  ================================================
preset                for     method     settings
====================  ======  =========  ================================================
``wsi-clustered``     wsi     clustered  default for WSI. lambda_d 0.672 per pitch
                                         (SlideGraph's 3e-3/px at a 224-px pitch),
                                         lambda_f 0.5 per median neighbour feature
                                         distance, threshold 0.85, neighbourhood 3
                                         pitches / 28 neighbours; Delaunay edges up to
                                         10 pitches long.
``ct-clustered-3d``   ct      clustered  default for CT. As above in 3-D, neighbourhood
                                         2 pitches / 32 neighbours (the 26-neighbourhood
                                         of a cubic grid); Delaunay edges up to 6 pitches.
``wsi-slidegraph``    wsi     clustered  SlideGraph's own defaults (raw lambda_f 1e-3,
                                         threshold 0.8, neighbourhood 4 pitches): the
                                         same clusters as TIAToolbox at a 224-px pitch.
``wsi-patch-knn``     wsi     patch      8 nearest neighbours (Patch-GCN).
``ct-patch-knn``      ct      patch      26 nearest neighbours (3x3x3 neighbourhood).
====================  ======  =========  ================================================

Degenerate inputs: a bag with no patches, NaN/inf embeddings or coordinates, or
coordinates of the wrong width raise :class:`~radiopath.errors.RadiopathInputError` naming
the file and field. One patch gives one node without edges; collinear or coplanar positions
give the Delaunay triangulation of the line or plane they span (no Qhull error); duplicated
positions are each joined to the first patch at that position (with a warning). In a cohort,
a file whose embedding width differs from the majority of its modality is reported and
skipped (``strict=True`` raises).

Scaling: KD-tree queries, per-pair feature distances on at most ``max_neighbours`` pairs per
patch, mutual-nearest-neighbour merge rounds and Qhull are each O(N log N) or O(N k); no
N x N matrix is formed. ``benchmarks/bench_graphs.py`` compares against SlideGraph.

Example
-------
>>> from radiopath.io import read_embeddings
>>> from radiopath.graph import build_graph, plot_graph
>>> graph = build_graph(read_embeddings("slide.h5"))                   # doctest: +SKIP
>>> graph = build_graph(bag, "wsi-patch-knn", k=6)                     # doctest: +SKIP
>>> ax = plot_graph(graph, values=importance, background=thumb,
...                 background_scale=32 * 0.5)                          # doctest: +SKIP
"""

from radiopath.graph.build import SpatialGraph, build_graph
from radiopath.graph.cohort import (
    build_cohort_graphs,
    load_graph_manifest,
    patient_graphs,
    resolve_cohort_presets,
)
from radiopath.graph.config import (
    DEFAULTS,
    DESCRIPTIVE_KEYS,
    MODALITY_DEFAULTS,
    GraphConfig,
    available_presets,
    load_preset,
)
from radiopath.graph.plot import plot_graph
from radiopath.graph.storage import load_graph, read_graph_meta, save_graph

__all__ = [
    "DEFAULTS",
    "DESCRIPTIVE_KEYS",
    "MODALITY_DEFAULTS",
    "GraphConfig",
    "SpatialGraph",
    "available_presets",
    "build_cohort_graphs",
    "build_graph",
    "load_graph",
    "load_graph_manifest",
    "load_preset",
    "patient_graphs",
    "plot_graph",
    "read_graph_meta",
    "resolve_cohort_presets",
    "save_graph",
]
