"""Batched probes: several perturbations of the same batch evaluated in one forward pass.

An estimator that probes P points theta + alpha_p z_p of one batch (n-SPSA's +-eps z_k, FZOO's
theta and theta + eps u_i) can fold the probe axis into the batch: the model runs once on the
batch repeated P times, and every module that owns a trainable tensor computes rows
[p B, (p+1) B) with its weights at theta + alpha_p z_p. The weights themselves never move: the
perturbed copies come from the exact (shadow) perturbation's hooks and scratch
(:mod:`zoft.optim.shadow`), one module and one probe at a time, so the weights each module sees
are bit-identical to the sequential shadow probes; modules without trainable tensors (attention
products, activations, frozen layers) run once on all P B rows.

The closure stays opaque. It is called once per probe, as sequentially: the first call runs the
model on the repeated inputs and keeps the P slices of each output; the later calls get slice p
of the same model call instead of running the model, so each call reduces its own loss. The
closure must call ``model`` with the same inputs for every probe and compute its loss from the
outputs (a loss reduced inside the model over the repeated batch is refused).

Cost: activations (and outputs) are P times larger for the one forward; that is the memory
traded for fewer, larger forwards, which is where accelerators gain. Results equal the
sequential shadow probes up to the rounding of batch-size-dependent kernels in the modules
without trainable tensors (the tests check float64 agreement).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from zoft.optim.directions import Job, Term
from zoft.optim.shadow import ShadowPerturbation

# (step, direction k, alpha): theta + alpha z_k; alpha = 0 is theta itself
Probe = tuple[int, int, float]


class BatchedProbes:
    """Evaluates a closure at several probes with one model forward per group of probes."""

    def __init__(self, model: torch.nn.Module, shadow: ShadowPerturbation, group_size: int) -> None:
        if group_size < 1:
            raise ValueError(f"probe_batch={group_size} must be >= 1")
        if model in shadow.owned:
            raise ValueError(f"probe_batch={group_size}: the model itself owns trainable tensors "
                             f"({', '.join(name for name, _, _ in shadow.owned[model])}), e.g. a soft prompt; "
                             "their rows cannot be told apart, set probe_batch=1")
        self.model = model
        self.shadow = shadow
        self.group_size = int(group_size)
        self._probes: Sequence[Probe] = ()
        self._rows = 0  # P * B of the current batched forward
        self._active: Optional[int] = None  # the probe an owning module is computing (nesting)
        self._used: set = set()  # owning modules whose forward ran in this group

    def losses(self, closure: Callable[[], Any], probes: Sequence[Probe]) -> list[float]:
        """``float(closure())`` at each probe, in order, ``group_size`` probes per forward."""
        out: list[float] = []
        for start in range(0, len(probes), self.group_size):
            out.extend(self._group(closure, probes[start:start + self.group_size]))
        return out

    # -- one group: one forward ----------------------------------------------------------------
    def _group(self, closure: Callable[[], Any], probes: Sequence[Probe]) -> list[float]:
        self._probes = probes
        cache: list[tuple[tuple, list]] = []  # per model call of the closure: (inputs, P output slices)
        state = {"probe": 0, "call": 0}
        original = self.model.forward

        def top_forward(*args, **kwargs):
            call, p = state["call"], state["probe"]
            state["call"] += 1
            if p == 0:
                cache.append(((args, kwargs), self._batched_call(original, args, kwargs, len(probes))))
            elif call >= len(cache) or not _same_inputs(cache[call][0], (args, kwargs)):
                raise RuntimeError("batched probes: the closure called the model with other inputs for probe "
                                   f"{p} than for probe 0; every probe must evaluate the same batch "
                                   "(or set optimizer.probe_batch=1)")
            return cache[call][1][p]

        losses = []
        self._used = set()
        with _forward_replaced(self.model, top_forward), self._owning_modules_split():
            for p in range(len(probes)):
                state["probe"], state["call"] = p, 0
                losses.append(float(closure()))
                if p == 0:
                    self._check_first_call(bool(cache))
        return losses

    def _check_first_call(self, called_model: bool) -> None:
        if not called_model:
            raise RuntimeError("batched probes: the closure never called the optimizer's model; "
                               "set optimizer.probe_batch=1")
        unused = [type(m).__name__ for m in self.shadow.owned if m not in self._used]
        if unused:  # e.g. prefix weights read directly, not through their module's forward
            raise RuntimeError(f"batched probes: {len(unused)} module(s) owning trainable tensors "
                               f"({', '.join(sorted(set(unused)))}) did not run their forward, so their "
                               "weights were never perturbed; set optimizer.probe_batch=1")

    def _batched_call(self, forward: Callable, args: tuple, kwargs: dict, count: int) -> list:
        """Run ``forward`` once on the inputs repeated ``count`` times; the ``count`` slices."""
        batch = _batch_size(args, kwargs)
        self._rows = batch * count
        rep_args, rep_kwargs = _map_tensors((args, kwargs), lambda t: _repeat(t, batch, count))
        try:
            output = forward(*rep_args, **rep_kwargs)
        finally:
            self._rows = 0  # owning modules called outside the batched forward are refused
        return [_slice(output, batch * count, count, p) for p in range(count)]

    # -- the owning modules: one probe per slice of rows ---------------------------------------
    @contextmanager
    def _owning_modules_split(self) -> Iterator[None]:
        with ExitStack() as stack:
            for module in self.shadow.owned:
                stack.enter_context(_forward_replaced(module, self._split_forward(module, module.forward)))
            yield

    def _split_forward(self, module: torch.nn.Module, forward: Callable) -> Callable:
        def split(*args, **kwargs):
            self._used.add(module)
            if self._active is not None:  # inside an owning parent's slice: that probe's weights
                with self._weights_of(module, self._probes[self._active]):
                    return forward(*args, **kwargs)
            count, rows = len(self._probes), self._rows
            if rows == 0:
                raise RuntimeError(f"batched probes: {type(module).__name__} owns trainable tensors and ran outside "
                                   "the model's batched forward; set optimizer.probe_batch=1")
            # The leading size of the first per-row input: the (possibly flattened) repeated batch.
            lead = next((t.shape[0] for t in _tensors((args, kwargs)) if _is_rows(t, rows)), None)
            if lead is None:
                raise RuntimeError(f"batched probes: {type(module).__name__} got no input with the batch "
                                   f"({rows} rows, probe-major) leading; set optimizer.probe_batch=1")
            outputs = []
            for p, probe in enumerate(self._probes):
                a, kw = _map_tensors((args, kwargs), lambda t: _block(t, lead, count, p))
                self._active = p
                try:
                    with self._weights_of(module, probe):
                        outputs.append(forward(*a, **kw))
                finally:
                    self._active = None
            return _concat(outputs)
        return split

    @contextmanager
    def _weights_of(self, module: torch.nn.Module, probe: Probe) -> Iterator[None]:
        """The module computes with theta + alpha z_k (the shadow scratch; alpha 0: theta)."""
        step, k, alpha = probe
        entries = self.shadow.owned[module]
        if alpha == 0.0:
            yield
            return
        swapped = []
        try:
            with torch.inference_mode(False), torch.no_grad():
                jobs = []
                for name, p, index in entries:
                    view = self.shadow.alloc(p)
                    swapped.append((name, p))
                    jobs.append(Job(view, p, index, 1.0, (Term(step, k, alpha),)))
                    module._parameters[name] = view
                self.shadow.sampler.apply(jobs)
            yield
        finally:
            for name, p in reversed(swapped):
                module._parameters[name] = p
                self.shadow.free(p)


@contextmanager
def _forward_replaced(module: torch.nn.Module, forward: Callable) -> Iterator[None]:
    """``module.forward`` is ``forward`` inside (an instance attribute, as accelerate's hooks set
    one; a previous instance attribute is put back afterwards)."""
    previous = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous


# -- pytrees of model inputs and outputs ---------------------------------------------------------
def _map_tensors(tree: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(_map_tensors(x, fn) for x in tree)
    if isinstance(tree, list):
        return [_map_tensors(x, fn) for x in tree]
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    return tree


def _tensors(tree: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_tensors(tree, lambda t: found.append(t) or t)
    return found


def _batch_size(args: tuple, kwargs: dict) -> int:
    tensors = [t for t in _tensors((args, kwargs)) if t.dim() >= 1]
    if not tensors:
        raise RuntimeError("batched probes: the model was called without tensor inputs")
    return tensors[0].shape[0]


def _is_rows(t: torch.Tensor, rows: int) -> bool:
    """Whether dim 0 is the repeated batch, possibly flattened with later dimensions
    ((P B) x T rows as OPT's MLP sees them): probe-major, so a multiple of P B."""
    return t.dim() >= 1 and t.shape[0] % rows == 0 and t.shape[0] > 0


def _block(t: torch.Tensor, lead: int, count: int, p: int) -> torch.Tensor:
    """Probe p's contiguous share of dim 0 of a tensor whose dim 0 is ``lead`` (others pass)."""
    if t.dim() == 0 or t.shape[0] != lead:
        return t
    per = t.shape[0] // count
    return t[p * per:(p + 1) * per]


def _repeat(t: torch.Tensor, batch: int, count: int) -> torch.Tensor:
    """[t; t; ...; t] along the batch dimension (tensors of another leading size pass)."""
    if t.dim() >= 1 and t.shape[0] == batch:
        return t.repeat(count, *([1] * (t.dim() - 1)))
    return t


def _slice(output: Any, rows: int, count: int, p: int) -> Any:
    """Probe p's block of every tensor of a model output whose dim 0 is the repeated batch
    (``rows``, or a multiple: flattened rows); a ModelOutput keeps its class."""
    for t in _tensors(output):
        if t.dim() == 0:
            raise RuntimeError("batched probes: the model returned a reduced tensor (a loss over the batch); "
                               "compute the loss from per-example outputs in the closure, or set "
                               "optimizer.probe_batch=1")
    block = lambda t: _block(t, t.shape[0], count, p) if _is_rows(t, rows) else t  # noqa: E731
    if isinstance(output, dict) and type(output) is not dict:  # transformers' ModelOutput
        return output.__class__(**{k: _map_tensors(v, block) for k, v in output.items()})
    return _map_tensors(output, block)


def _concat(outputs: list) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs, dim=0)
    if isinstance(first, tuple):
        return tuple(_concat([o[i] for o in outputs]) for i in range(len(first)))
    if isinstance(first, list):
        return [_concat([o[i] for o in outputs]) for i in range(len(first))]
    if isinstance(first, dict):
        return first.__class__(**{k: _concat([o[k] for o in outputs]) for k in first})
    if all(o is None for o in outputs):
        return None
    raise RuntimeError(f"batched probes: cannot join module outputs of type {type(first).__name__}; "
                       "set optimizer.probe_batch=1")


def _same_inputs(a: Any, b: Any) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(ta, tb))
