"""Any Hugging Face causal LM (``model=hf-causal model.path=...``): tiny Qwen3, Mistral and Gemma
folders built in code (tests/causal_zoo.py) are named and typed from their config.json, every
method runs on them through the config path, the methods find their modules through the family
table, and prompts follow each tokenizer's BOS rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

import causal_zoo
from conftest import FAST, ROOT, compose_config
from methods_helpers import tiny
from zoft.config.protocol import settle
from zoft.config.schema import MethodConfig
from zoft.config.validate import ConfigError, validate
from zoft.examples import Example
from zoft.methods import apply_method
from zoft.methods.lora import LORA_TARGETS
from zoft.models.families import FAMILIES, UnsupportedModelError, loaded_family, method_families
from zoft.prompting import encode_example
from zoft.run import run
from zoft.tasks import get_task

ZOO = tuple(causal_zoo.ZOO)  # qwen3, mistral, gemma


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """family -> a saved tiny model folder named tiny-<family>."""
    root = tmp_path_factory.mktemp("zoo")
    return {f: causal_zoo.save(f, root / f"tiny-{f}") for f in ZOO}


# ------------------------------------------------------------------ the family table
def test_the_method_registry_and_the_config_checks_read_the_one_table():
    from zoft.config.choices import METHOD_FAMILIES, MODEL_FAMILIES

    for method in ("lora", "prefix", "prompt"):
        assert METHOD_FAMILIES[method] == method_families(method)
    assert set(ZOO) | {"opt", "llama", "roberta", "bert"} <= set(MODEL_FAMILIES)
    assert method_families("prompt") == tuple(f for f in FAMILIES if f != "bert")


@pytest.mark.parametrize("family", ZOO + ("opt", "llama"))
def test_each_method_finds_the_modules_the_table_names(family):
    build = (lambda: causal_zoo.build(family)[0]) if family in ZOO else (lambda: tiny(family))
    row = FAMILIES[family]
    model = build()
    # the head that method=head trains and linear probing fits
    assert model.get_submodule(row.head) is model.get_output_embeddings()
    torch.manual_seed(0)
    named = apply_method(model, MethodConfig(name="lora", lora_r=2), family)
    layers = model.config.num_hidden_layers
    assert len(named) == 2 * layers * len(row.lora_targets)  # A and B per target module and layer
    adapted = {parts[parts.index(lora) - 1] for parts in (n.split(".") for n, _ in named)
               for lora in ("lora_A", "lora_B") if lora in parts}
    assert adapted == set(LORA_TARGETS[family]) == set(row.lora_targets)
    for method in ("head", "linear-probe", "prompt"):
        named = apply_method(build(), MethodConfig(name=method), family)
        assert named and all(p.requires_grad for _, p in named)


@pytest.mark.parametrize("family", ZOO)
def test_prefix_equals_the_tokens_in_front_and_ignores_padding(family):
    """As tests/methods/test_methods_prefix.py for OPT and LLaMA: the real-activation prefix of P random
    tokens gives the logits of running those tokens in front (grouped-query attention, Qwen3's
    q/k norms, Gemma's scaled embeddings), and left padding leaves the real tokens' logits alone."""
    p = 5
    model, base = causal_zoo.build(family)[0], causal_zoo.build(family)[0]
    vocab = model.config.vocab_size
    torch.manual_seed(1)
    tokens = torch.randint(0, vocab, (1, p))  # what the initialisation draws
    torch.manual_seed(1)
    apply_method(model, MethodConfig(name="prefix", num_prefix=p), family)
    x = torch.randint(10, vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    q = x.shape[1]
    got = model(input_ids=x, attention_mask=torch.ones_like(x), position_ids=torch.arange(q).expand(2, q)).logits
    full = torch.cat([tokens.expand(2, p), x], dim=1)
    positions = torch.cat([torch.arange(p), torch.arange(q)]).expand(2, p + q)
    ref = base(input_ids=full, attention_mask=torch.ones_like(full), position_ids=positions).logits[:, p:]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    pad = torch.zeros((1, 3), dtype=torch.long)  # any id: masked out (Mistral has no pad token)
    padded = model(input_ids=torch.cat([pad, x[:1]], 1),
                   attention_mask=torch.cat([torch.zeros(1, 3), torch.ones(1, q)], 1).long()).logits[:, 3:]
    torch.testing.assert_close(padded, model(input_ids=x[:1], attention_mask=torch.ones_like(x[:1])).logits,
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ naming and typing from config.json
def _settled(overrides):
    cfg = compose_config(overrides)
    settle(cfg, overrides)
    return cfg


@pytest.mark.parametrize("family", ZOO)
def test_hf_causal_takes_its_name_and_family_from_the_folder(folders, family):
    cfg = _settled(["model=hf-causal", f"model.path={folders[family]}"])
    assert (cfg.model.name, cfg.model.family, cfg.model.kind) == (f"tiny-{family}", family, "causal")
    validate(cfg)
    # a tiny preset pointed at the folder is that folder's model too (it was labelled tiny-llama)
    cfg = _settled(["model=tiny-llama", f"model.path={folders[family]}"])
    assert (cfg.model.name, cfg.model.family) == (f"tiny-{family}", family)
    cfg = _settled(["model=hf-causal", f"model.path={folders[family]}", f"model.family={family}"])
    validate(cfg)


def test_a_hub_id_is_named_after_its_last_part():
    cfg = _settled(["model=hf-causal", "model.path=Qwen/Qwen3-0.6B"])
    # not in the (offline) cache: the family is read once the config is downloaded, at load time
    assert (cfg.model.name, cfg.model.family) == ("Qwen3-0.6B", "auto")
    validate(cfg)


def test_presets_without_a_path_keep_their_names():
    for preset, name, family in (("tiny-opt", "tiny-opt", "opt"), ("tiny-llama", "tiny-llama", "llama"),
                                 ("opt-13b", "opt-13b", "opt")):
        cfg = _settled([f"model={preset}"])
        assert (cfg.model.name, cfg.model.family) == (name, family)


def _gpt2_folder(folder):
    GPT2LMHeadModel(GPT2Config(vocab_size=causal_zoo.VOCAB, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
    causal_zoo.build_tokenizer("qwen").save_pretrained(folder)
    return folder


def test_an_unsupported_architecture_is_refused_naming_the_supported_families(tmp_path, folders):
    folder = _gpt2_folder(tmp_path / "gpt2")
    with pytest.raises(ConfigError) as err:
        validate(_settled(["model=hf-causal", f"model.path={folder}"]))
    message = str(err.value)
    assert "'gpt2' model" in message and "opt, llama, mistral, qwen2, qwen3, gemma, phi, phi3" in message
    with pytest.raises(ConfigError, match="model.family='opt'.*'qwen3' model.*model.family=qwen3"):
        validate(_settled(["model=opt-13b", f"model.path={folders['qwen3']}"]))
    with pytest.raises(ConfigError, match="model.family=auto .* needs model.path"):
        validate(_settled(["model=hf-causal"]))
    with pytest.raises(ConfigError, match="model.family='falcon' is not valid"):
        validate(_settled(["model=tiny-opt", "model.family=falcon"]))


def test_the_loaded_config_decides_an_unread_family():
    assert loaded_family("auto", "qwen3", "model.path='Qwen/Qwen3-0.6B'") == "qwen3"
    assert loaded_family("roberta", "xlm-roberta", "model.path='x'") == "roberta"  # stated, not in the table
    with pytest.raises(UnsupportedModelError, match="'t5' model.*supported families: opt, llama"):
        loaded_family("auto", "t5", "model.path='google/t5'")
    with pytest.raises(UnsupportedModelError, match="model.family='llama' but .* 'gemma' model"):
        loaded_family("llama", "gemma", "model.path='g'")


def test_a_family_without_a_tiny_architecture_needs_a_path():
    from zoft.errors import ZoftUserError
    from zoft.config.schema import ModelConfig
    from zoft.models.loader import load_model

    with pytest.raises(ZoftUserError, match="none for family='qwen3'.*set model.path="):
        load_model(ModelConfig(name="tiny-llama", family="qwen3", device="cpu"))


@pytest.mark.slow
def test_cli_refuses_an_unsupported_architecture_with_exit_2(tmp_path):
    folder = _gpt2_folder(tmp_path / "gpt2")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "model=hf-causal", f"model.path={folder}",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'gpt2' model" in proc.stderr and "qwen3" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ every method x optimizer, config path
TRAINING = [(m, o) for m in ("ft", "lora", "prefix", "head") for o in ("adam", "mezo")]
RUNS = TRAINING + [("linear-probe", "adam"), ("linear-probe", "mezo"), ("zero-shot", None), ("icl", None)]
QUICK = {("prefix", "mezo"), ("lora", "adam")}  # the rest of the matrix (about 40 s) is marked slow


def _options(method, optimizer):
    if method == "linear-probe":  # a closed-form fit; with mezo the paper's LP-MeZO (method=lp-mezo)
        return ["method=lp-mezo"] if optimizer == "mezo" else ["method=linear-probe"]
    if optimizer is None:
        return [f"method={method}", "method.num_demos=4"]
    return [f"method={method}", f"optimizer={optimizer}"]


@pytest.mark.parametrize("family", ZOO)
@pytest.mark.parametrize("method,optimizer", [
    pytest.param(m, o, marks=() if (m, o) in QUICK else pytest.mark.slow, id=f"{m}-{o or 'eval'}") for m, o in RUNS])
def test_every_method_and_optimizer_runs_on_the_folder(tmp_path, folders, family, method, optimizer):
    cfg = compose_config(FAST + _options(method, optimizer) + [
        "model=hf-causal", f"model.path={folders[family]}", "trainer.max_steps=2", "trainer.eval_steps=0",
        "task.num_dev=8", "task.num_test=8", f"output_dir={tmp_path}"])
    results = run(cfg)
    assert results["status"] == "completed"
    assert (results["config"]["model"]["name"], results["config"]["model"]["family"]) == (f"tiny-{family}", family)
    assert 0 <= results["metrics"]["test_accuracy"] <= 1
    if optimizer is None:
        assert results["parameters"]["trainable"] == 0 and "training" not in results
    elif method != "linear-probe" or optimizer == "mezo":
        assert results["training"]["steps"] == 2
        assert results["protocol"]["key"].startswith(f"method={method} optimizer={optimizer} family=causal")


# ------------------------------------------------------------------ prompts and BOS rules
BOS_FIRST = {"qwen3": None, "mistral": "<s>", "gemma": "<bos>"}


@pytest.mark.parametrize("family", ZOO)
def test_prompts_render_with_each_tokenizers_bos_rules(folders, family):
    tok = AutoTokenizer.from_pretrained(folders[family])  # as the loader reads it
    spec = get_task("sst2")
    ex = Example(fields={"sentence": "the acting was really quite good ."}, candidates=("terrible", "great"), gold=1)
    enc = encode_example(spec, ex, tok, max_length=2048)
    prompt = tok.encode(spec.prompt.encode(ex).strip(" "))
    bos = BOS_FIRST[family]
    if bos is None:  # Qwen: no BOS token exists and none is added
        assert tok.bos_token is None and prompt[0] not in tok.all_special_ids
    else:
        assert tok.convert_ids_to_tokens(prompt[0]) == bos and prompt.count(tok.bos_token_id) == 1
    for row, option_len, word in zip(enc.input_ids, enc.option_lens, ex.candidates):
        # the scored continuation is exactly the label word, and the tokens before it are the prompt's
        assert option_len == 1 and list(row[:-option_len]) == prompt, (family, row, prompt)
        assert tok.decode(row[-option_len:]).strip() == word
    # ICL left-truncation keeps the BOS of tokenizers that add one, and cuts any other from the left
    long = Example(fields={"sentence": "the movie was good . " * 60}, candidates=("terrible", "great"), gold=1)
    cut = encode_example(spec, long, tok, max_length=32)
    full = tok.encode(spec.prompt.verbalize(long, "great").strip(" "))
    row = list(cut.input_ids[1])
    assert len(row) == 32 and row[-5:] == full[-5:]
    assert row == (full[:1] + full[-31:] if bos else full[-32:])
