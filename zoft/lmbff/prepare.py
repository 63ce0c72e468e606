"""``zoft prepare-lmbff``: fetch LM-BFF's data archive, lay it out as LM-BFF's tools expect, and
write the k-shot splits (LM-BFF's tools/generate_k_shot_data.py).

Layout under ``--out`` (default ``data``): ``original/<Task>/`` (the archive; ``original/SST-2``
renamed ``SST-2-original`` and ``original/GLUE-SST-2`` renamed ``SST-2``, so GLUE SST-2 is the
default), then ``k-shot-1k-test/<Task>/<K>-<seed>/`` for each K and seed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from zoft.errors import ZoftUserError
from zoft.lmbff.catalog import LMBFF_TASKS, LmBffTask
from zoft.lmbff.formats import LmBffDataError
from zoft.lmbff.kshot import PAPER_SEEDS, generate_kshot

log = logging.getLogger(__name__)

ARCHIVE_URL = "https://nlp.cs.princeton.edu/projects/lm-bff/datasets.tar"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # seconds without a byte before the download is given up


class PrepareError(ZoftUserError, RuntimeError):
    """The archive cannot be fetched or laid out."""


def manual_steps(out: Path, url: str) -> str:
    return (f"To prepare by hand: download {url} on a machine with internet access, copy it here "
            f"and run `python -m zoft.cli prepare-lmbff --archive /path/to/datasets.tar --out {out}`; "
            f"or extract it yourself so that {out / 'original'}/<Task>/ holds each task's files "
            f"(rename original/SST-2 to SST-2-original and original/GLUE-SST-2 to SST-2) and run "
            f"`python -m zoft.cli prepare-lmbff --skip-download --out {out}`.")


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` through the proxies the environment names (``https_proxy``,
    ``http_proxy``, ``no_proxy``: urllib's rules, as curl and wget follow them); an unreachable
    host, or proxy, fails within seconds, and a cut download leaves no file behind."""
    parsed = urlparse(url)
    where = f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
    opener = urllib.request.build_opener()  # reads the proxy variables now, not at first use
    try:  # a short request first, so a machine without a network is told in seconds
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=CONNECT_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # the server answered (some refuse HEAD): the download below reports a real error
    except (OSError, ValueError) as err:
        raise PrepareError(f"cannot reach {where} to download {url} ({_reason(err)}). "
                           + manual_steps(dest.parent, url)) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(dest.suffix + ".part")
    log.info("downloading %s", url)
    try:
        with opener.open(url, timeout=READ_TIMEOUT_S) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise PrepareError(f"download of {url} failed ({_reason(err)}). " + manual_steps(dest.parent, url)) from None
    partial.replace(dest)
    return dest


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)  # URLError wraps the socket error
    return str(reason if reason is not None else err)


def extract(archive: Path, out: Path) -> Path:
    """Extract the archive into ``out`` (it holds ``original/``) and apply LM-BFF's renames.

    Python's ``data`` filter refuses members that would land outside ``out`` (absolute paths,
    ``..``, links leading out, devices); it exists from Python 3.10.12 / 3.11.4 / 3.12 on. On an
    older patch release the same rules are checked here, member by member, before extracting.
    """
    if not archive.is_file():
        raise PrepareError(f"--archive {str(archive)!r} is not a file")
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(out, filter="data")
            else:
                tar.extractall(out, members=safe_members(tar, out, archive))
    except tarfile.TarError as err:  # FilterError too: a member the data filter refuses
        raise PrepareError(f"{archive} cannot be extracted safely or is not a readable tar archive ({err})") from None
    return layout(out)


def safe_members(tar: tarfile.TarFile, out: Path, archive: Path) -> list[tarfile.TarInfo]:
    """The members of ``tar``, each checked to stay inside ``out`` (the ``data`` filter's rules, for
    Pythons without it): files, folders, and links whose target is inside ``out``; permissions
    without set-id bits or write access for others. Anything else is refused, naming the member,
    before a single file is written."""
    root = os.path.realpath(out)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    members = []
    for member in tar.getmembers():
        name = member.name
        if os.path.isabs(name) or not inside(os.path.join(root, name)):
            raise PrepareError(f"{archive}: member {name!r} would be written outside {out}; refusing the archive")
        if member.issym() and (os.path.isabs(member.linkname)
                               or not inside(os.path.join(root, os.path.dirname(name), member.linkname))):
            raise PrepareError(f"{archive}: symbolic link {name!r} -> {member.linkname!r} leads outside {out}")
        if member.islnk() and (os.path.isabs(member.linkname) or not inside(os.path.join(root, member.linkname))):
            raise PrepareError(f"{archive}: hard link {name!r} -> {member.linkname!r} leads outside {out}")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise PrepareError(f"{archive}: member {name!r} is a device or a pipe, which a data archive has no use for")
        member.mode &= 0o755  # no set-id bits, no write access for group and others
        members.append(member)
    return members


def layout(out: Path) -> Path:
    """Check ``out/original`` and rename SST-2 -> SST-2-original, GLUE-SST-2 -> SST-2."""
    original = out / "original"
    if not original.is_dir():
        raise PrepareError(f"{original} does not exist; " + manual_steps(out, ARCHIVE_URL))
    glue_sst2 = original / "GLUE-SST-2"
    if glue_sst2.is_dir():
        if (original / "SST-2").is_dir() and not (original / "SST-2-original").exists():
            (original / "SST-2").rename(original / "SST-2-original")
        if not (original / "SST-2").exists():
            glue_sst2.rename(original / "SST-2")
    return original


def prepare(out: str | Path, ks: Sequence[int] = (16, 512), seeds: Sequence[int] = PAPER_SEEDS,
            tasks: Sequence[LmBffTask] | None = None, archive: str | Path | None = None,
            skip_download: bool = False, url: str = ARCHIVE_URL) -> dict[str, list[Path]]:
    """Download (unless given ``archive`` or ``skip_download``), lay out, generate k-shot splits.

    Tasks whose folder is missing under ``original/``, and (task, K) pairs refused for having fewer
    than 2K examples of a label, are skipped with a warning; it is an error when nothing is written.
    CR is rebalanced as MeZO's data script does (250 test examples per label, the rest train: see
    :mod:`zoft.lmbff.kshot`), so CR K=512 is written for every seed; ``original/`` is left as extracted.
    """
    out = Path(out).expanduser()
    if skip_download:
        original = layout(out)
    else:
        if archive is None:
            archive = download(url, out / "datasets.tar")
        original = extract(Path(archive).expanduser(), out)
    tasks = list(tasks) if tasks else list(LMBFF_TASKS.values())
    written: dict[str, list[Path]] = {}
    for task in tasks:
        if not (original / task.data_name).is_dir():
            log.warning("skipping %s: %s is missing", task.name, original / task.data_name)
            continue
        for k in ks:
            try:
                folders = generate_kshot(task, original / task.data_name, out / "k-shot-1k-test", k, seeds)
            except LmBffDataError as err:
                # a label with fewer than 2K examples (a small custom file): skip that pair, keep the rest
                log.warning("skipping %s k=%d: %s", task.name, k, err)
                continue
            written.setdefault(task.name, []).extend(folders)
    if not written:
        raise PrepareError(f"no k-shot split was written: none of the tasks' folders ({', '.join(t.data_name for t in tasks)}) "
                           f"is in {original}; " + manual_steps(out, url))
    return written
