"""The kernel view of prompt-based fine-tuning (eNTK; the original's medium_models/src/kernel_trainer.py and kernel_solvers.py).

f(x) is the vector of label-word logits at the ``<mask>`` of a prompt (or the single logit
f1 - f0 for binary tasks). The empirical neural tangent kernel between a training example i
(logit a) and an example j (logit b) is an inner product of parameter gradients of f; a kernel
solver then predicts labels from kernel rows instead of training the network.

Modules: :mod:`.function` (f and its inputs), :mod:`.params` (which parameters the kernel is
taken over), :mod:`.compute` (the formulas), :mod:`.distributed` (rows sharded over ranks),
:mod:`.store` (kernel files and the cache), :mod:`.solvers`, :mod:`.pipeline` (a whole run).
"""

from zoft.kernel.compute import FORMULAS, compute_kernel
from zoft.kernel.function import LabelWordLogits, PromptInputs, targets_for
from zoft.kernel.params import ParamSubset, split_params
from zoft.kernel.solvers import SOLVERS, SolverResult, solve
from zoft.kernel.store import load_kernel, save_kernel

__all__ = [
    "FORMULAS", "SOLVERS", "LabelWordLogits", "ParamSubset", "PromptInputs", "SolverResult",
    "compute_kernel", "load_kernel", "save_kernel", "solve", "split_params", "targets_for",
]
