"""``zoft prepare-lmbff``: offline failure with instructions, and layout + k-shot from a local
archive shaped like LM-BFF's datasets.tar."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import FIXTURES
from zoft.cli import main
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.prepare import PrepareError, extract, prepare


def test_unreachable_archive_fails_with_manual_steps(tmp_path):
    with pytest.raises(PrepareError) as err:
        prepare(tmp_path, url="http://127.0.0.1:9/datasets.tar")
    message = str(err.value)
    assert "cannot reach 127.0.0.1:9" in message
    assert "--archive /path/to/datasets.tar" in message and "GLUE-SST-2 to SST-2" in message


def test_command_line_prints_one_line_error(tmp_path, capsys):
    assert main(["prepare-lmbff", "--out", str(tmp_path), "--skip-download"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "original does not exist" in err


def test_archive_is_laid_out_and_split(tmp_path):
    src = tmp_path / "src" / "original"
    shutil.copytree(FIXTURES / "lmbff" / "SST-2", src / "GLUE-SST-2")  # GLUE SST-2 in the archive
    (src / "SST-2").mkdir()  # LM-BFF's other SST-2 copy, renamed aside
    shutil.copytree(FIXTURES / "lmbff" / "mr", src / "mr")
    archive = tmp_path / "datasets.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="original")
    out = tmp_path / "data"
    written = prepare(out, ks=[2, 4], seeds=[13, 42], archive=archive)
    assert set(written) == {"sst-2-kshot", "mr-kshot"}
    assert len(written["sst-2-kshot"]) == 4 and len(written["mr-kshot"]) == 2  # mr too small for k=4
    assert (out / "original" / "SST-2-original").is_dir()
    assert (out / "original" / "SST-2" / "train.tsv").is_file()
    for rel in ("SST-2/2-13/train.tsv", "SST-2/4-42/dev.tsv", "mr/2-42/test.csv", "mr/2-13/train.csv"):
        assert (out / "k-shot-1k-test" / rel).is_file(), rel
    assert not (out / "k-shot-1k-test" / "mr" / "4-42").exists()


def _sst2_archive(tmp_path):
    src = tmp_path / "src" / "original"
    shutil.copytree(FIXTURES / "lmbff" / "SST-2", src / "GLUE-SST-2")
    archive = tmp_path / "datasets.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="original")
    return archive


def test_download_goes_through_the_proxy(tmp_path, monkeypatch):
    """The archive's host refuses connections; the proxy the environment names fetches it."""
    from http_helpers import LoopbackServer, clear_proxies, closed_port_url

    clear_proxies(monkeypatch)
    archive = _sst2_archive(tmp_path).read_bytes()
    url = closed_port_url() + "/datasets.tar"
    with LoopbackServer({"/datasets.tar": (200, {"Content-Type": "application/x-tar"}, archive)}) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        written = prepare(tmp_path / "data", ks=[2], seeds=[13], tasks=[LMBFF_TASKS["sst-2-kshot"]], url=url)
    assert [m for m, target in proxy.requests] == ["HEAD", "GET"] and proxy.requests[1][1] == url
    assert (tmp_path / "data" / "datasets.tar").read_bytes() == archive
    assert [p.name for p in written["sst-2-kshot"]] == ["2-13"]


def _without_the_data_filter(monkeypatch):
    """Python before 3.10.12 / 3.11.4: no tarfile.data_filter, and extractall takes no filter."""
    original = tarfile.TarFile.extractall

    def extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if kwargs:
            raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return original(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)


def test_extract_works_where_tarfile_has_no_data_filter(tmp_path, monkeypatch):
    archive = _sst2_archive(tmp_path)
    _without_the_data_filter(monkeypatch)
    original = extract(archive, tmp_path / "data")
    assert (original / "SST-2" / "train.tsv").is_file()


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/zoft-absolute.txt", "link-out"])
def test_extract_refuses_members_outside_the_folder_without_the_data_filter(tmp_path, monkeypatch, member):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "link-out":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    _without_the_data_filter(monkeypatch)
    out = tmp_path / "deep" / "data"
    with pytest.raises(PrepareError, match="outside"):
        extract(archive, out)
    assert not (tmp_path / "deep" / "escape.txt").exists() and not Path("/tmp/zoft-absolute.txt").exists()
    assert not out.exists() or not any(out.iterdir())  # refused before a single file was written


def test_cr_k512_is_prepared_for_every_seed(tmp_path):
    """The archive's cr holds 1000 test examples per label; prepare-lmbff rebalances it as MeZO's data
    script does (250), so that K=512 has 2K training examples per label."""
    from lmbff_helpers import cr_lines

    src = tmp_path / "src" / "original" / "cr"
    src.mkdir(parents=True)
    lines = cr_lines()
    groups = {lab: [ln[2:].strip() for ln in lines if ln[0] == lab] for lab in ("1", "0")}
    (src / "test.csv").write_text("".join(f"{lab},{t}\n" for lab, g in groups.items() for t in g[:1000]))
    (src / "train.csv").write_text("".join(f"{lab},{t}\n" for lab, g in groups.items() for t in g[1000:]))
    archive = tmp_path / "datasets.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src.parent, arcname="original")
    written = prepare(tmp_path / "data", ks=[16, 512], seeds=[13, 21, 42, 87, 100], archive=archive)
    assert sorted(p.name for p in written["cr-kshot"]) == sorted(
        f"{k}-{s}" for k in (16, 512) for s in (13, 21, 42, 87, 100))
    test = (tmp_path / "data" / "k-shot-1k-test" / "cr" / "512-13" / "test.csv").read_text().splitlines()
    assert len(test) == 500
    assert (src / "test.csv").read_text() == (tmp_path / "data" / "original" / "cr" / "test.csv").read_text()
