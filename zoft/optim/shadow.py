"""Exact ("shadow") perturbation: the module sees theta + eps*z, theta itself is never changed.

In fp16/bf16, perturbing in place (+eps z, -2 eps z, +eps z) does not give theta back: each add
rounds, and the lost low bits cannot be recovered without storing them (MeZO issue #42). Here a
forward pre-hook on each module that owns a shadowed parameter writes ``theta + alpha*z`` into a
scratch buffer and points the module at it for that module's forward; a forward hook points it
back. theta changes only in the update, so with lr = 0 it stays bit-identical, and with lr > 0 the
change is the update alone.

Memory: the scratch is a stack (module forwards nest). Its size is the largest sum of shadowed
parameters along one path of nested modules, which for Hugging Face models (parameters live in
leaf modules) is the largest module's parameters, i.e. about the largest tensor.
Cost: the perturbed copy is drawn once per module call; a parameter tied into two modules (the
OPT embedding and LM head) is drawn twice per forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from zoft.optim.directions import DirectionSampler, Job, Term


class ShadowPerturbation:
    """Hooks that swap perturbed copies of ``params`` (id -> tensor index) into ``model``."""

    def __init__(self, model: torch.nn.Module, params: dict[int, tuple[int, torch.nn.Parameter]],
                 sampler: DirectionSampler) -> None:
        self.sampler = sampler
        self.params = params
        self.owned: dict[torch.nn.Module, list[tuple[str, torch.nn.Parameter, int]]] = {}
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None and id(p) in params:
                    self.owned.setdefault(module, []).append((name, p, params[id(p)][0]))
        missing = set(params) - {id(p) for entries in self.owned.values() for _, p, _ in entries}
        if missing:
            raise ValueError(f"{len(missing)} trainable parameter(s) are not owned by any module of "
                             "the model given to MeZO; exact (shadow) perturbation needs the model "
                             "that uses them")
        self.sizes = self._stack_sizes(model)
        self.scratch: dict[torch.dtype, torch.Tensor] = {}
        self._top: dict[torch.dtype, int] = {}

    def _stack_sizes(self, model: torch.nn.Module) -> dict[tuple, int]:
        """Largest per-(device, dtype) sum of owned parameter sizes along a module nesting path."""
        best: dict[tuple, int] = {}

        def visit(module: torch.nn.Module, acc: dict[tuple, int], seen: frozenset) -> None:
            if id(module) in seen:
                return
            acc = dict(acc)
            for _, p, _ in self.owned.get(module, []):
                key = (p.device, p.dtype)
                acc[key] = acc.get(key, 0) + p.numel()
                best[key] = max(best.get(key, 0), acc[key])
            for child in module.children():
                visit(child, acc, seen | {id(module)})

        visit(model, {}, frozenset())
        return best

    def alloc(self, p: torch.Tensor) -> torch.Tensor:
        """A scratch view shaped like ``p`` (the top of the stack; give it back with :meth:`free`)."""
        key = (p.device, p.dtype)
        buf = self.scratch.get(key)
        if buf is None:
            buf = self.scratch[key] = torch.empty(self.sizes[key], device=p.device, dtype=p.dtype)
        top = self._top.get(key, 0)
        self._top[key] = top + p.numel()
        return buf[top:top + p.numel()].view(p.shape)

    def free(self, p: torch.Tensor) -> None:
        """Give back the top scratch view taken for ``p``."""
        key = (p.device, p.dtype)
        self._top[key] -= p.numel()

    @contextmanager
    def perturbed(self, step: int, k: int, alpha: float) -> Iterator[None]:
        """Inside the block, every forward of an owning module sees ``p + alpha * z_k``."""
        visited: set[int] = set()
        called = [False]

        def pre_hook(module, args):
            called[0] = True
            jobs = []
            # The closure usually runs under inference_mode; the scratch and its views must be
            # normal tensors, because worker threads (outside inference mode) write into them.
            with torch.inference_mode(False), torch.no_grad():
                for name, p, index in self.owned[module]:
                    view = self.alloc(p)
                    jobs.append(Job(view, p, index, 1.0, (Term(step, k, alpha),)))
                    module._parameters[name] = view  # a plain tensor: the module reads it as its weight
                    visited.add(id(p))
                self.sampler.apply(jobs)

        def post_hook(module, args, output):
            for name, p, _ in reversed(self.owned[module]):
                module._parameters[name] = p
                self.free(p)
            return None

        handles = []
        for module in self.owned:
            # First among the module's pre-hooks: a method's own hook (the soft prompt's) then reads
            # the perturbed tensor.
            handles.append(module.register_forward_pre_hook(pre_hook, prepend=True))
            handles.append(module.register_forward_hook(post_hook, always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
        if called[0] and len(visited) < len(self.params):
            raise RuntimeError(f"{len(self.params) - len(visited)} shadow-perturbed parameter(s) were "
                               "not used through their module's forward; use perturbation='inplace'")
