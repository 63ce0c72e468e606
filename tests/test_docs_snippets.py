"""Every code snippet of README.md and docs/ runs as written.

* Python blocks are executed verbatim. A block that uses names it does not define says which
  in a ``<!-- snippet: name, name -->`` comment just above it; the test provides them (a tiny
  OPT model and its batches), runs the block, and checks that it trained.
* Every ``python train.py ...`` command in a bash block is checked as train.py would check it
  before starting (config groups, composition, protocol, validation), without running it:
  a documented command that no longer composes fails here.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from zoft.config.schema import TinyArchConfig
from zoft.frontend import Stop, preflight
from zoft.models.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- snippet: (?P<names>[^>]*?) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
ARCH = TinyArchConfig(hidden_size=32, num_layers=1, num_heads=2, ffn_dim=64)


def blocks(lang: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(page:line, provided names, body) of every ``lang`` block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            if m.group("lang") == lang:
                names = tuple(n.strip() for n in (m.group("names") or "").split(",") if n.strip())
                line = text.count("\n", 0, m.start("body"))
                found.append((f"{page.relative_to(ROOT)}:{line}", names, m.group("body")))
    return found


def _batch(seed: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(4, 200, (8, 12), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids}


def provided(names: tuple[str, ...]) -> dict:
    """The names a snippet expects from its surroundings."""
    model = build_tiny_model("opt", "causal", ARCH, 0)
    batches = [_batch(i) for i in range(4)]
    known = {
        "model": model,
        "loader": batches,
        "batches": batches,
        "loss_of": lambda m, batch: m(**batch).loss,
        "ds": [{"input_ids": row, "labels": row} for b in batches for row in b["input_ids"]],
    }
    unknown = [n for n in names if n not in known]
    assert not unknown, f"the snippet asks for {unknown}; provide them in tests/test_docs_snippets.py"
    return {n: known[n] for n in names}


PYTHON = blocks("python")


def test_the_docs_have_python_snippets():
    assert len(PYTHON) >= 3  # engine.md (a loop, the HF Trainer), estimators.md


@pytest.mark.parametrize("where,names,body", PYTHON, ids=[w for w, _, _ in PYTHON])
def test_python_snippet_runs_as_written(where, names, body, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets may write (the Trainer's output_dir)
    namespace = provided(names)
    model = namespace.get("model")
    before = [p.detach().clone() for p in model.parameters()] if model is not None else []
    exec(compile(body, where, "exec"), namespace)  # noqa: S102 - the documented code itself
    if model is not None:  # it trained: forward passes moved the weights
        assert any(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters())), where


def train_commands() -> list[tuple[str, list[str]]]:
    """(page:line, arguments) of every ``python train.py`` line in bash blocks."""
    found = []
    for where, _, body in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("python train.py"):
                found.append((where, shlex.split(line)[2:]))
    return found


COMMANDS = train_commands()


def test_the_docs_have_train_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.slow  # ~1 s of composition per command
@pytest.mark.parametrize("where,args", COMMANDS, ids=[f"{w} {' '.join(a)[:60]}" for w, a in COMMANDS])
def test_documented_train_command_composes_and_validates(where, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pre-run check makes the run folder: keep it out of the checkout
    if "launcher=slurm" in args:  # it needs sbatch on PATH: a stand-in (tests/fake_slurm.py)
        import fake_slurm

        fake_slurm.install(tmp_path / "bin")
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    try:
        preflight(args, ROOT / "conf", check_weights=False)  # the paper's models are not on this machine
    except Stop as stop:
        assert stop.code == 0, f"{where}: python train.py {' '.join(args)}\n{stop}"


def test_every_doc_section_a_message_points_to_exists():
    """A message's "(see docs/tasks.md, 'Data')" names a page and a heading (or bold lead) that
    exist: the offline-data error once pointed to a README section that did not."""
    pointer = re.compile(r"see (README(?:\.md)?|docs/[\w-]+\.md), '([^']+)'")
    found = [(path, m) for path in sorted((ROOT / "zoft").rglob("*.py")) for m in pointer.finditer(path.read_text())]
    assert found  # the offline-data hint is one
    for path, match in found:
        page = ROOT / (match.group(1) if match.group(1).endswith(".md") else "README.md")
        text = page.read_text()
        section = re.escape(match.group(2))
        assert re.search(rf"^#+ {section}\b|\*\*{section}\*\*", text, re.M), f"{path.name}: {match.group(0)}"
