"""The optimizer registry reads each option's record from its class's source: these tests keep
that reading equal to what the imported classes say, and the record complete."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest
import torch
from hydra.utils import get_class

from conftest import compose_config
from optim_helpers import lm_closure, tiny_opt
from zoft.config.optimizer_checks import option_problems
from zoft.optim.build import build_optimizer
from zoft.optim.registry import OPTIMIZERS, DeclarationError, read_declarations
from zoft.optim.spec import Capabilities, Setting, capabilities_of, declared_settings, passes_per_step

NAMES = list(OPTIMIZERS)


@pytest.mark.parametrize("name", NAMES)
def test_the_record_read_from_the_source_is_what_the_class_declares(name):
    record = OPTIMIZERS[name]
    cls = get_class(record.target)
    assert capabilities_of(cls) == record.capabilities
    assert declared_settings(cls) == record.settings


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_feeds_a_constructor_argument_or_the_loop(name):
    """torchtune-style signature check: a setting's argument exists on the class (or a base it
    passes ``**kwargs`` to); ``arg=""`` marks the ones zoft's loop consumes."""
    cls = get_class(OPTIMIZERS[name].target)
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            params = inspect.signature(klass.__dict__["__init__"]).parameters
            accepted |= set(params)
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                break
    for key, setting in OPTIMIZERS[name].settings.items():
        if setting.arg != "":
            assert (setting.arg or key) in accepted, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_the_option_file_builds_its_class_and_the_declared_passes_are_spent(name):
    cfg = compose_config([f"optimizer={name}", "method=ft", "optimizer.lr=1e-4"])
    assert option_problems(cfg.optimizer) == []
    model = tiny_opt()
    opt = build_optimizer(cfg.optimizer, list(model.named_parameters()), seed=0, model=model)
    assert type(opt).__name__ == OPTIMIZERS[name].target.rsplit(".", 1)[1]
    if not OPTIMIZERS[name].capabilities.zeroth_order:
        return
    opt.step(lm_closure(model))
    expected = passes_per_step(OPTIMIZERS[name].capabilities.forward_passes, opt.n_directions)
    if expected is not None:  # mezo-norm's count depends on its layer groups
        assert opt.forward_passes_per_step == expected, name


def test_the_registry_reads_every_option_without_torch():
    code = ("import sys; from zoft.optim.registry import OPTIMIZERS; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(len(OPTIMIZERS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(OPTIMIZERS) >= 18


def test_a_new_estimator_module_is_read_with_its_base_declarations(tmp_path, monkeypatch):
    """What docs/estimators.md's "Adding an estimator" writes: a subclass of MeZO declaring its
    capabilities and one setting, read as MeZO's settings plus its own."""
    (tmp_path / "my_estimator.py").write_text(textwrap.dedent('''
        from zoft.optim.mezo import MeZO
        from zoft.optim.spec import Capabilities, Setting


        class HalfStep(MeZO):
            capabilities = Capabilities(summary="MeZO with a damped step", zeroth_order=True, forward_passes="2n")
            settings = {"damping": Setting("float", "(0,1]", "the step's factor")}

            def __init__(self, params, damping=0.5, lr=1e-6, **kwargs):
                super().__init__(params, lr=lr * damping, **kwargs)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    capabilities, settings, root = read_declarations("my_estimator.HalfStep")
    assert capabilities == Capabilities(summary="MeZO with a damped step", zeroth_order=True, forward_passes="2n")
    assert dict(settings) == {**OPTIMIZERS["mezo"].settings, "damping": Setting("float", "(0,1]", "the step's factor")}
    assert set(root) == set(OPTIMIZERS["mezo"].settings)  # the shared ones: not listed as its own
    assert "my_estimator" not in sys.modules  # read, not imported


def test_several_bases_merge_in_the_order_python_looks_them_up(tmp_path, monkeypatch):
    (tmp_path / "mixed_estimator.py").write_text(textwrap.dedent('''
        from zoft.optim.mezo import MeZO
        from zoft.optim.spec import Capabilities, Setting


        class First:
            settings = {"lr": Setting("float", ">0", "first's lr"), "alpha": Setting("float", ">=0", "a")}


        class Second:
            settings: dict = {"lr": Setting("float", ">=1", "second's lr"), "beta": Setting("int", ">=0", "b")}


        class Both(First, Second, MeZO):
            capabilities = Capabilities(summary="both", zeroth_order=True, forward_passes="2n")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    _, settings, _ = read_declarations("mixed_estimator.Both")
    import mixed_estimator

    assert dict(settings) == declared_settings(mixed_estimator.Both)
    assert dict(settings)["lr"].what == "first's lr"


@pytest.mark.parametrize("source,message", [
    ("from zoft.optim import MeZO\n\nclass Lazy(MeZO):\n    pass\n", "import it from the module that defines it"),
    ("class Orphan(Missing):\n    pass\n", "its base Missing is neither defined nor imported"),
    ("from zoft.optim.spec import Setting\n\nclass Bad:\n    settings = {'x': Setting('complex', '', 'x')}\n",
     "Setting kind='complex'"),
])
def test_an_unreadable_class_is_one_clear_error(tmp_path, monkeypatch, source, message):
    module = f"unreadable_{abs(hash(source)) % 10**6}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = source.split("class ")[1].split("(")[0].split(":")[0]
    with pytest.raises(DeclarationError, match=message):
        read_declarations(f"{module}.{name}")


def test_a_declaration_that_is_not_a_literal_is_refused(tmp_path, monkeypatch):
    (tmp_path / "computed_estimator.py").write_text(textwrap.dedent('''
        from zoft.optim.mezo import MeZO
        from zoft.optim.spec import Capabilities

        PASSES = "2n"


        class Computed(MeZO):
            capabilities = Capabilities(summary="x", zeroth_order=True, forward_passes=PASSES)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DeclarationError, match="declarations must be literals"):
        read_declarations("computed_estimator.Computed")


def test_an_optimizer_from_outside_zoft_is_taken_as_backprop():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert capabilities_of(opt) == Capabilities(summary="SGD")


@pytest.mark.parametrize("formula,n,expected", [("2n", 3, 6), ("n+1", 8, 9), ("2n+3", 2, 7), ("3", 5, 3),
                                                ("1", 1, 1), ("1 + backward", 1, None)])
def test_passes_per_step_reads_the_declared_formulas(formula, n, expected):
    assert passes_per_step(formula, n) == expected
