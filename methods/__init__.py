"""The methods as plain PyTorch objects, for any training loop: no Ignite, no config, no run.

Each object follows one protocol (``base.py``): ``terms(features, labels, logits=, images=)`` /
``method(...)`` for its loss terms, ``update(features, labels)`` after the optimizer step,
``parameter_groups(lr)``, ``state_dict()`` / ``load_state_dict()`` and ``to(device)``. The
preparations that change the model before training are functions. The engine's methods
(``method.name`` in a config) are adapters over these objects.

    from adarand.methods import AdaRand
    reg = AdaRand.from_loader(model.backbone, eval_loader, num_classes, total_steps=epochs * len(train_loader))
    loss = F.cross_entropy(logits, y) + reg(features, y)          # in the step
    reg.update(features, y)                                       # after optimizer.step()
"""

from .base import Method, make_params
from .bss import BSS
from .co_tuning import CoTuning
from .core_tuning import CoreTuning
from .delta import Delta, channel_attention, measure_attention
from .dr_tune import DRTune
from .l2sp import L2SP
from .preparations import convert_batchnorm, fit_linear_probe, linear_probe, zero_head
from .random_features import AdaRand, RandReg, priors_from_statistics
from .statistics import ClassStatistics, class_priors, class_statistics, extract_features
from .uot import UOT, select_source_classes

__all__ = [
    "AdaRand", "BSS", "ClassStatistics", "CoTuning", "CoreTuning", "DRTune", "Delta", "L2SP", "Method", "RandReg", "UOT",
    "channel_attention", "class_priors", "class_statistics", "convert_batchnorm", "extract_features", "fit_linear_probe",
    "linear_probe", "make_params", "measure_attention", "priors_from_statistics", "select_source_classes", "zero_head",
]
