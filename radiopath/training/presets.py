"""Training presets: named layers laid over the defaults of
:class:`~radiopath.training.config.TrainingConfig` before the user's configuration.

``paper`` adds nothing to the paper's values (Gao et al. 2025, Sec. 3.1), ``reference`` is the
authors' published code, ``interpretable`` trains the top-k selection to find the signal, and
``learned`` (the default) is the recipe that fits on cohorts of 100-500 patients.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # The paper's text: GCN convolutions, top-k ratio 0.2, the expected KL of Eq. (5).
    "paper": {},
    # The authors' published code (sparra-method.md, section 7).
    "reference": {
        "conv": {"wsi": "gin", "ct": "gin"},
        "ratio": {"wsi": 0.2, "ct": 0.7},
        "sparra": {"kl": "reference", "reconstruction": "mse"},
    },
    # The paper's model, trained so that its top-k selection learns where the signal is,
    # with importance maps traced back through the convolutions too. Top-k pooling learns
    # its selection only through the gates of the nodes it keeps; Gumbel noise on the
    # scores lets nodes near the cut be kept (and learn) now and then, a 10x learning
    # rate for the two pooling projections lets the selection move within a short
    # schedule, and dropout on the surviving nodes only lets it see clean features. On
    # the synthetic test cohort (3 seeds, GCN, k = 0.2; benchmarks/bench_importance.py)
    # the planted share of the kept nodes rose from 0.26 to 0.58 (base rate 0.11), the
    # planted-patch importance AUC from 0.53 (paper, selection maps) to 0.78, the test
    # C-index from 0.63 to 0.75. With the paper's short schedule (20 epochs at 3e-4) on
    # 205 patients the selection barely moves: AUC 0.57 WSI (bench_pipeline.py).
    "interpretable": {
        "pooling": {"dropout_position": "pooled", "score_noise": 0.5, "lr_scale": 10.0},
        "importance": "receptive_field",
    },
}

# The default recipe, for cohorts of 100-500 patients where averaging is not enough (each
# choice backed by experiments/ablation-recipe.yaml and benchmarks/bench_recipe.py; the
# benchmarks/README.md has the tables):
# - each bag read against its own column-wise median (``center: median``), so a
#   patient-level offset shared by every patch (scanner, stain, reconstruction kernel)
#   cannot reach the model; unlike the mean, the median is not moved by a small region, so
#   the rest of the bag does not carry a blurred copy of the region's shift, which gave the
#   selection a second, wrong way to fit (maps failing in whole folds);
# - each modality dropped from a training patient with probability 0.5 (never the last
#   one, ``modality_dropout``): with both modalities carrying the signal, the branch that
#   fits first (WSI) left the other's selection unsupervised, so its maps drifted to the
#   decoy or away from the region;
# - optimisation counted in steps: 400 Adam steps at batch 16 and lr 2e-3 (the paper's
#   20 epochs at batch 32 and 3e-4 are about 100 steps at 150 patients: nothing is fitted).
#   At lr 1e-3 the models still underfitted (training C-index 0.75 on a 200-patient
#   cohort, the chosen epoch often among the last); 2e-3 raised SPARRA's C-index on all six
#   cohorts measured (+0.008 to +0.026, three of them not used before), maps level;
# - the epoch chosen on an inner validation split of the training fold (20%, from 30% of
#   the schedule on), never the test fold;
# - top-k ratio 0.5 (two layers keep 25% of the nodes; at 0.2 only 4% survive, fewer than
#   the relevant tissue, and C fell from 0.64 to 0.52 on the confounded cohort);
# - SPARRA's scores started away from the flat point (``init_mu`` 1, ``init_logvar`` -3:
#   at mu_s = 0 the weight's gradient vanishes), its weights as in the paper (``sharpness``
#   1: with 4 the weights sat on a few nodes, the selection below them got little gradient
#   and whole CT branches selected the wrong tissue) and its variational term at 0.01 (at
#   0.1 its KL keeps every variance up and the weights uniform);
# - node features projected on their leading whitened principal components, a quarter of
#   the feature width but at least 16 (at most half of it), fitted on the training fold's within-bag covariance (``pca``):
#   label-free, and it leaves the survival labels of 100-500 patients a 16-d search for
#   where to look instead of a 64-d one (SPARRA C 0.651/0.654/0.680 -> 0.715/0.706/0.714
#   on three 64-d confounded cohorts, importance AUC 0.52-0.81 -> 0.73-0.85). A fixed 16
#   was too few for 128-d features with 8 tissue types (C 0.642, maps at chance; 32
#   components: 0.691, AUC 0.79 / 0.77), and a quarter of 16-d features (4) too few on
#   the 16-d test cohort (AUC 0.30 where 8 gives above 0.8);
# - width 64 for the encoder and SPARRA's score network (as good as 128 and ~1.3x faster);
# - the interpretable preset's top-k exploration (Gumbel noise 0.5, 10x pooling lr,
#   dropout after the selection) and receptive-field importance maps;
# - three models per fold (``ensemble: 3``; member i trained as the single model of seed
#   + i), their standardised risks and normalised maps averaged: a top-k branch settles on
#   the wrong tissue in one (fold, modality) from one start and not from another, and one
#   such branch was behind every map target a single model missed. On the three default
#   cohorts (seed 0) the map AUCs went 0.93 / 0.94 / 0.95 (WSI) and 0.92 / 0.90 / 0.95 (CT)
#   to 0.95 / 0.96 / 0.96 and 0.94 / 0.94 / 0.96 (the worst (fold, modality) branch
#   0.81 / 0.81 / 0.88 -> 0.88 / 0.91 / 0.94),
#   on unseen cohort A (48-d, 128 patients) 0.89 / 0.77 -> 0.93 / 0.87; C within 0.02
#   either way. Three times the training: ``ensemble: 1`` for quick sweeps;
# - training stopped once the selected epoch has gone unbeaten for a quarter of the
#   schedule (``validation.patience``): over 116 logged folds the same epoch was selected in
#   108 (an earlier, lower-scoring one in the rest), with 23% fewer epochs.
# - graph convolutions with a weight of their own on each node's row (``conv: gcn_root``,
#   Â H W + H W_root + b; since 2026-12-03): a GCN layer weighs a node like its
#   neighbours, so it cannot form the contrast between a marked region and the tissue
#   around it when the tissue types themselves vary along the marker. Over eight cohorts x
#   three seeds (120-250 patients, 32-128-d; ball, elongated and scattered regions) the
#   downstream CoxPH C-index rose on every cohort (+0.006 to +0.034 on average, the worst
#   seed at or above oracle - 0.03 on all eight where GCN missed on three), the CT maps of
#   the two cohorts where GCN's missed 0.9 from 0.893 / 0.889 to 0.921 / 0.902; the maps
#   moved both ways elsewhere (WSI -0.021 to +0.027, CT -0.015 to +0.028) and stayed at
#   0.90 or more on average, no seed below 0.87;
# Not in the recipe: the top-k ratio warm-up (``pooling.ratio_warmup``), which helped the
# cohorts it was measured on and lowered the maps of others (benchmarks/README.md).
PRESETS["learned"] = {
    **PRESETS["interpretable"],
    "center": "median",
    "modality_dropout": 0.5,
    "steps": 400,
    "batch_size": 16,
    "lr": 2e-3,
    "validation": {"fraction": 0.2, "metric": "c_index", "start": 0.3, "patience": 0.25},
    "ensemble": 3,
    "ratio": {"wsi": 0.5, "ct": 0.5},
    "conv": {"wsi": "gcn_root", "ct": "gcn_root"},
    "hidden": 64,
    "pca": {"components": "auto", "whiten": True},
    "sparra": {
        "variational_weight": 0.01,
        "init_mu": 1.0,
        "init_logvar": -3.0,
        "hidden_channels": 64,
    },
    "abmil": {"hidden_channels": 64},
}
