"""OmegaConf resolvers used by ``conf/config.yaml``.

``zoft.job_subdir`` names each multirun job's folder: the job number, the overrides that differ
between jobs (Hydra's ``override_dirname``, which excludes the seeds), then the data seed and the
run seed last, e.g. ``3_optimizer.lr=1e-6,task.k=16,sample_seed=13,seed=13``. Reading a sweep
folder then shows which configuration each job ran, and runs that differ only in seed sort next to
each other.

``zoft.model_name`` and ``zoft.model_family`` let a model preset be pointed at any checkpoint
(``model=hf-causal model.path=Qwen/Qwen3-0.6B``): with a path, the run is named after the Hub id's
or folder's last part and its family is read from the checkpoint's config.json.
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

from zoft.config.protocol import protocol_value
from zoft.models.families import family_from_path, model_label

# File names are limited to 255 bytes; long override lists are cut and made unique with a hash.
MAX_OVERRIDES_CHARS = 180


def job_subdir(num: object, override_dirname: object, sample_seed: object, seed: object) -> str:
    """``<num>_<overrides>,sample_seed=<s>,seed=<s>`` (no leading comma when nothing was overridden)."""
    overrides = "" if override_dirname is None else str(override_dirname)
    if len(overrides.encode()) > MAX_OVERRIDES_CHARS:
        digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
        overrides = overrides.encode()[:MAX_OVERRIDES_CHARS - 10].decode(errors="ignore") + f"~{digest}"
    parts = [overrides] if overrides else []
    parts += [f"sample_seed={sample_seed}", f"seed={seed}"]
    return f"{num}_" + ",".join(parts)


def model_name(default: str, path: object) -> str:
    """``default`` (the preset's name) while ``model.path`` is null, else the path's last part."""
    return default if path is None else model_label(str(path))


def model_family(default: str, path: object) -> str:
    """``default`` while ``model.path`` is null, else the family of the checkpoint's config.json
    (see :func:`zoft.models.families.family_from_path`)."""
    return family_from_path(default, None if path is None else str(path))


def register_resolvers() -> None:
    """Register zoft's resolvers once (safe to call again)."""
    if not OmegaConf.has_resolver("zoft.job_subdir"):
        OmegaConf.register_new_resolver("zoft.job_subdir", job_subdir)
    if not OmegaConf.has_resolver("protocol"):
        OmegaConf.register_new_resolver("protocol", protocol_value)
    if not OmegaConf.has_resolver("zoft.model_name"):
        OmegaConf.register_new_resolver("zoft.model_name", model_name)
    if not OmegaConf.has_resolver("zoft.model_family"):
        OmegaConf.register_new_resolver("zoft.model_family", model_family)
