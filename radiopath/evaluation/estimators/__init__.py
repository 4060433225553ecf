"""The downstream survival models as estimators, one file per model, each with
scikit-survival's ``fit`` / ``predict`` API (they drop into a ``Pipeline`` or
``GridSearchCV``):

* :mod:`.coxph` -- :class:`TorchCoxPH`, ``CoxPHSurvivalAnalysis`` (ridge, Breslow ties);
* :mod:`.coxnet` -- :class:`TorchCoxnet`, ``CoxnetSurvivalAnalysis`` (elastic-net path);
* :mod:`.fsvm` -- :class:`TorchFastSurvivalSVM`, ``FastSurvivalSVM`` (ranking objective);
* :mod:`.rsf` -- :class:`NumbaRandomSurvivalForest`, ``RandomSurvivalForest`` compiled.

The scikit-survival estimators themselves are the other backend
(``evaluation.backend: sksurv``; ``rsf.engine`` chooses the forest with either backend).
"""

from radiopath.evaluation.estimators.coxnet import TorchCoxnet
from radiopath.evaluation.estimators.coxph import TorchCoxPH
from radiopath.evaluation.estimators.fsvm import TorchFastSurvivalSVM
from radiopath.evaluation.estimators.rsf import NumbaRandomSurvivalForest

__all__ = ["NumbaRandomSurvivalForest", "TorchCoxPH", "TorchCoxnet", "TorchFastSurvivalSVM"]
