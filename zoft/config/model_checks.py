"""Checks of ``model.family`` against the family table and the checkpoint's own config.json.

Run by :func:`zoft.config.validate.validate` before anything loads: a local folder's config.json is
read (milliseconds), so a family zoft does not support, or a preset pointed at a checkpoint of
another family, fails with exit 2 before any data or weights are touched. A Hub id that is not in
the local cache is checked by the loader once its config is downloaded.
"""

from __future__ import annotations

from zoft.config.choices import MODEL_FAMILIES
from zoft.models.families import AUTO, FAMILIES, family_of_model_type, looks_local, read_model_type, \
    supported_families_text


def unsupported_model_type(setting: str, model_type: str, kind: str) -> str:
    """The message for a checkpoint whose architecture no family of the table covers."""
    return (f"{setting} is a {model_type!r} model (config.json's model_type), which zoft's methods do not "
            f"support; supported families for model.kind={kind}: {supported_families_text(kind)} "
            "(see zoft/models/families.py and docs/configuration.md)")


def family_problems(m) -> list[str]:
    """Problems with ``model.family`` (``m`` is the composed ``model`` node)."""
    family, path = m.family, m.path
    if family == AUTO:
        if path is None:
            return ["model.family=auto reads the family from the checkpoint's config.json, so it needs "
                    "model.path=<Hub id or local folder> (e.g. model=hf-causal model.path=Qwen/Qwen3-0.6B)"]
        return []
    model_type = read_model_type(path) if path is not None and looks_local(path) else None
    if family not in MODEL_FAMILIES:
        if model_type == family:  # the preset read it from config.json: an architecture zoft lacks
            return [unsupported_model_type(f"model.path={path!r}", model_type, m.kind)]
        return [f"model.family={family!r} is not valid; choose one of {', '.join(MODEL_FAMILIES)}"]
    if model_type is None:
        return []
    actual = family_of_model_type(model_type)
    if actual is None:
        return [unsupported_model_type(f"model.path={path!r}", model_type, m.kind)]
    if actual != family:
        return [f"model.family={family!r} (model {m.name!r}) but model.path={path!r} holds a {model_type!r} "
                f"model (family {actual}); use model=hf-causal model.path={path}, which reads the family from "
                f"config.json, or set model.family={actual}"]
    return []


def family_known(family: str) -> bool:
    """Whether method x family can be checked now (``auto``: only once the model is loaded)."""
    return family in FAMILIES
