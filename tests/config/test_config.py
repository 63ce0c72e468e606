"""Every option of every group composes; bad input fails early with a clear message."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import CONF, compose_config
from zoft.config.validate import ConfigError, validate
from zoft.tasks import TASKS

# `sweep` is appended with +sweep=NAME (not in the defaults list): tests/config/test_sweeps.py covers it.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "sweep")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    """A tiny Qwen3 folder for model=hf-causal, which needs a model.path."""
    import causal_zoo

    return causal_zoo.save("qwen3", tmp_path_factory.mktemp("zoo") / "tiny-qwen3")


def _with_path(overrides: list[str], folder) -> list[str]:
    """A model option that reads its family from config.json (family auto) gets the tiny folder."""
    return overrides + [f"model.path={folder}"] if compose_config(overrides).model.family == "auto" else overrides


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option, zoo_folder):
    cfg = compose_config(_with_path([f"{group}={option}"], zoo_folder))
    assert cfg.model.name and cfg.task.name and cfg.optimizer.name
    if group == "task" and TASKS[cfg.task.name].family == "masked":
        # Masked-LM (LM-BFF) tasks run on masked models: pair them with tiny-roberta.
        cfg = compose_config([f"{group}={option}", "model=tiny-roberta"])
    if group == "mode" and option == "kernel":
        # Kernels need a masked LM: pair with tiny-roberta on a masked-LM task.
        masked = [name for name, spec in TASKS.items() if spec.family == "masked"]
        if not masked:
            return
        cfg = compose_config([f"{group}={option}", "model=tiny-roberta", f"task={masked[0]}"])
    elif group == "model" and cfg.model.kind != "causal":
        # The default task is a causal-LM task: pair masked models with a masked-LM task.
        masked = [name for name, spec in TASKS.items() if spec.family == "masked"]
        if not masked:
            return
        cfg = compose_config([f"{group}={option}", f"task.name={masked[0]}"])
    validate(cfg)


def test_paper_command_composes():
    cfg = compose_config(["method=mezo", "task=sst2", "model=opt-13b"])
    assert cfg.optimizer.name == "mezo"
    assert cfg.optimizer.eps == pytest.approx(1e-3)
    assert cfg.optimizer.lr == pytest.approx(1e-6)
    assert cfg.trainer.batch_size == 16 and cfg.trainer.max_steps == 20000
    assert cfg.model.path == "facebook/opt-13b" and cfg.model.dtype == "float16"
    assert cfg.task.num_train == 1000 and cfg.task.num_dev == 500 and cfg.task.num_test == 1000


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["optimizer.learning_rate=1e-3"])
    assert "learning_rate" in str(err.value.__cause__ or err.value)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["trainer.max_steps=fast"])
    assert isinstance(err.value.__cause__, (ValidationError, ConfigKeyError))
    # The optimizer node has each option's own settings, typed by its class's declarations.
    with pytest.raises(ConfigError, match=r"^invalid configuration:\n  - optimizer.lr='fast' must be a number "
                                          r"\(the learning rate\)$"):
        validate(compose_config(["optimizer.lr=fast"]))


def test_unknown_group_option_lists_valid_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["task=sst3"])
    message = str(err.value)
    assert "sst3" in message and "sst2" in message


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optimizer.eps=0", "optimizer.eps=0.0 must be > 0"),
        ("optimizer.eps=-1e-3", "optimizer.eps=-0.001 must be > 0"),
        ("optimizer.lr=-1", "optimizer.lr=-1.0 must be >= 0"),
        ("trainer.batch_size=0", "trainer.batch_size=0 must be >= 1"),
        ("trainer.lr_scheduler=cosine", "trainer.lr_scheduler='cosine' is not valid; choose one of constant, linear"),
        ("model.dtype=float8", "model.dtype='float8' is not valid"),
        ("task.name=sst3", "unknown task 'sst3'. Did you mean sst2?"),
        ("optimizer.direction=uniform", "optimizer.direction='uniform' is not valid"),
        ("method.name=magic", "method.name='magic' is not valid"),
    ],
)
def test_bad_values_name_the_value_and_valid_choices(override, needle):
    cfg = compose_config([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert needle in str(err.value)


def test_all_problems_are_reported_together():
    cfg = compose_config(["optimizer.eps=0", "trainer.batch_size=0"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "optimizer.eps" in str(err.value) and "trainer.batch_size" in str(err.value)


def test_masked_model_on_causal_task_is_rejected():
    cfg = compose_config(["model=tiny-roberta", "task=sst2"])
    with pytest.raises(ConfigError, match="causal-LM task but model 'tiny-roberta' is kind='masked'"):
        validate(cfg)


# -- every option of every group (nested folders included) composes AND builds ---------------------
TINY_OF = {("opt", "causal"): "tiny-opt", ("llama", "causal"): "tiny-llama", ("roberta", "masked"): "tiny-roberta",
           ("roberta", "seq-cls"): "tiny-roberta-cls", ("bert", "seq-cls"): "tiny-roberta-cls"}


def all_options() -> list[tuple[str, str]]:
    """(group, option) for every yaml under conf/, recursively (sweeps excepted, see test_sweeps)."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if rel.parts[0] in ("sweep",) or len(rel.parts) < 2:
            continue
        found.append(("/".join(rel.parts[:-1]), path.stem))
    return found


@pytest.fixture(scope="module")
def kshot_data(tmp_path_factory):
    from conftest import FIXTURES
    from zoft.lmbff.catalog import LMBFF_TASKS
    from zoft.lmbff.kshot import generate_kshot

    root = tmp_path_factory.mktemp("kshot")
    generate_kshot(LMBFF_TASKS["sst-2-kshot"], FIXTURES / "lmbff" / "SST-2", root, 4, [42])
    return root


def _buildable(group: str, option: str, kshot_root) -> list[str]:
    """Overrides that make ``group=option`` runnable offline on a tiny model of its family."""
    cfg = compose_config([f"{group}={option}"])
    masked = cfg.task.name.endswith("-kshot") or cfg.model.kind != "causal" or cfg.mode.name == "kernel"
    overrides = [f"{group}={option}"]
    if masked:
        model = TINY_OF.get((cfg.model.family, cfg.model.kind), "tiny-roberta") if group == "model" else "tiny-roberta"
        overrides += [f"model={model}", "task=sst-2-kshot", f"task.data_dir={kshot_root}", "task.k=4",
                      "task.sample_seed=42"]
    else:
        overrides += ["task=demo"]
        if cfg.model.path is not None:
            overrides += [f"model={TINY_OF[(cfg.model.family, cfg.model.kind)]}"]
    return overrides


@pytest.mark.parametrize("group,option", all_options())
def test_every_option_builds_its_components_on_a_tiny_model(group, option, kshot_data, zoo_folder):
    """The composed config settles its protocol, validates, and builds model, method, objective
    and optimizer (what a run does before its first step)."""
    from zoft.config.protocol import settle
    from zoft.config.choices import EVAL_ONLY
    from zoft.methods.registry import apply_method
    from zoft.models.loader import load_model
    from zoft.objectives.build import build_objective
    from zoft.optim.build import build_optimizer
    from zoft.tasks import get_task
    from zoft.tasks.data import load_task_data

    if group == "task" and option not in ("demo", "sst-2-kshot"):
        pytest.skip("task loaders are built in tests/tasks/test_opt_tasks.py and test_lmbff_data.py on fixtures")
    cfg = compose_config(_with_path(_buildable(group, option, kshot_data), zoo_folder) + [
        "task.num_train=8", "task.num_dev=4", "task.num_test=4"])
    settle(cfg)
    validate(cfg)
    spec = get_task(cfg.task.name)
    data = load_task_data(spec, cfg.task)
    num_labels = len(data.train[0].candidates) if cfg.model.kind == "seq-cls" else None
    loaded = load_model(cfg.model, num_labels=num_labels, dtype="float32")
    named = apply_method(loaded.model, cfg.method, loaded.family)
    objective = build_objective(cfg, spec, loaded, data)
    items = objective.prepare(data.train, train=True)
    assert items
    if cfg.method.name in EVAL_ONLY or cfg.mode.name == "kernel":
        return
    optimizer = build_optimizer(cfg.optimizer, named, seed=0, model=loaded.model)
    assert isinstance(optimizer, __import__("torch").optim.Optimizer)
