"""n-SPSA with the sample scheduler of the MeZO paper (Malladi et al., 2023, Appendix; original
``--zero_order_sample_scheduler`` and ``--scale_lr_with_samples``).

At step t (0-based) the number of directions is::

    constant: n_t = n
    linear:   n_t = max(1, int(t / T * n))        (T = ``total_steps``)

and the update is MeZO's with those directions::

    theta <- theta - lr * (s_t * sum_{k<n_t} g_k z_k + weight_decay * theta),
    s_t = 1 / n_t, or 1 with ``scale_lr_with_samples`` (the LR grows with n_t).

``n_directions`` is n_t of the step last taken (the loop counts 2 n_t forward passes); the
trajectory records ``n`` values per step (unused ones 0) and stays replayable.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

from zoft.optim.mezo import MeZO
from zoft.optim.spec import Capabilities, Setting


def samples_at(step: int, n: int, schedule: str, total_steps: Optional[int]) -> int:
    """n_t of the MeZO sample scheduler."""
    if schedule == "constant":
        return n
    return max(1, int(step / total_steps * n))


class ScheduledSPSA(MeZO):
    """MeZO with a schedule on the number of directions (``optimizer=mezo-nspsa``).

    Args (besides :class:`zoft.optim.MeZO`'s): n_directions: n, the largest count;
    sample_scheduler: ``constant`` or ``linear``; total_steps: T (needed by ``linear``);
    scale_lr_with_samples: sum the n_t estimates instead of averaging them.
    """

    capabilities = Capabilities(summary="n-SPSA with the MeZO paper's sample scheduler (constant/linear n, "
                                "scale_lr_with_samples)", zeroth_order=True, batches_probes=True, forward_passes="2n")
    settings = {
        "sample_scheduler": Setting("str", ("constant", "linear"), "the growth of n over training"),
        "sample_steps": Setting("int?", ">=1", "T of the linear schedule", arg="total_steps"),
        "scale_lr_with_samples": Setting("bool", "", "sum the n estimates instead of averaging them"),
    }

    def __init__(self, params: Iterable, n_directions: int = 4, sample_scheduler: str = "constant",
                 total_steps: Optional[int] = None, scale_lr_with_samples: bool = False, **kwargs) -> None:
        schedules = self.settings["sample_scheduler"].valid
        if sample_scheduler not in schedules:
            raise ValueError(f"sample_scheduler={sample_scheduler!r}; valid: {', '.join(schedules)}")
        if sample_scheduler == "linear" and not (total_steps and total_steps > 0):
            raise ValueError("the linear sample scheduler needs total_steps > 0 (optimizer.sample_steps)")
        super().__init__(params, n_directions=n_directions, **kwargs)
        self.max_directions = int(n_directions)
        self.sample_scheduler = sample_scheduler
        self.total_steps = total_steps
        self.scale_lr_with_samples = bool(scale_lr_with_samples)
        self.n_directions = self.samples(self.step_count)

    @property
    def record_width(self) -> int:
        """The largest n: every record has one width for the whole run (the unused ones 0)."""
        return self.max_directions

    def samples(self, step: int) -> int:
        return samples_at(step, self.max_directions, self.sample_scheduler, self.total_steps)

    def describe(self) -> dict:
        return {**super().describe(), "n_directions": self.max_directions, "rule": "n-spsa",
                "sample_scheduler": self.sample_scheduler, "total_steps": self.total_steps,
                "scale_lr_with_samples": self.scale_lr_with_samples}

    def _begin_step(self) -> None:
        self.n_directions = self.samples(self.step_count)

    def _descend(self, grads: Sequence[float]) -> None:
        if self.scale_lr_with_samples:  # MeZO averages (divides by n_t); undo it
            grads = [g * len(grads) for g in grads]
        super()._descend(grads)

    def trajectory_record(self, scalars: Sequence[float]) -> list[float]:
        """n values per step, the unused ones 0 (one record width for the whole run)."""
        return list(scalars) + [0.0] * (self.max_directions - len(scalars))

    @torch.no_grad()
    def replay(self, projected_grads: Sequence[float]) -> torch.Tensor:
        """A recorded step: the first n_t of the n recorded values."""
        self._begin_step()
        return super().replay(list(projected_grads)[:self.n_directions])

    def _load_zo_state(self, zo: Optional[dict]) -> None:
        super()._load_zo_state(zo)
        self.n_directions = self.samples(self.step_count)
