"""Archive unpacking (data/imagetext.safe_extract): every member is checked before anything is written; an
absolute path, a `..` component (including the `../<dest>.tmpX/...` sibling whose name shares the staging
folder's prefix), a symlink or a hard link refuses the whole archive, for zip and tar alike."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from msarepro.data.format import DatasetError
from msarepro.data.imagetext import safe_extract

DEST = "release.d"  # the staging folder is release.d.tmp; release.d.tmpX shares its prefix
BAD = {
    "absolute": "/tmp/msarepro-absolute-member.txt",
    "dotdot": "../escaped.txt",
    "sibling": f"../{DEST}.tmpX/file.txt",
}


def _zip(path: Path, bad_name: str | None = None, link: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MVSA/ok.txt", "fine")
        if bad_name is not None:
            z.writestr(zipfile.ZipInfo(bad_name), "escaped")
        if link:
            info = zipfile.ZipInfo("MVSA/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def _tar(path: Path, bad_name: str | None = None, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w") as t:
        data = b"fine"
        ok = tarfile.TarInfo("MVSA/ok.txt")
        ok.size = len(data)
        t.addfile(ok, io.BytesIO(data))
        if bad_name is not None:
            m = tarfile.TarInfo(bad_name)
            m.type = kind
            if kind == tarfile.REGTYPE:
                m.size = len(data)
                t.addfile(m, io.BytesIO(data))
            else:
                m.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "MVSA/ok.txt"
                t.addfile(m)
    return path


CASES = {
    **{f"zip-{k}": (lambda p, n=n: _zip(p / "release.zip", n), "'..'" if k != "absolute" else "absolute")
       for k, n in BAD.items()},
    "zip-symlink": (lambda p: _zip(p / "release.zip", link=True), "is a link"),
    **{f"tar-{k}": (lambda p, n=n: _tar(p / "release.tar", n), "'..'" if k != "absolute" else "absolute")
       for k, n in BAD.items()},
    "tar-symlink": (lambda p: _tar(p / "release.tar", "MVSA/link", tarfile.SYMTYPE), "is a link"),
    "tar-hardlink": (lambda p: _tar(p / "release.tar", "MVSA/hard", tarfile.LNKTYPE), "is a link"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unsafe_member_refuses_the_archive_before_extracting_anything(case, tmp_path):
    make, why = CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    archive = make(work)
    with pytest.raises(DatasetError) as e:
        safe_extract(archive, work / DEST)
    msg = str(e.value)
    assert str(archive) in msg and why in msg and "\n" not in msg
    assert sorted(p.name for p in work.iterdir()) == [archive.name]  # nothing unpacked, no staging folder
    assert not Path(BAD["absolute"]).exists() and not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("make", [lambda p: _zip(p / "release.zip"), lambda p: _tar(p / "release.tar")],
                         ids=["zip", "tar"])
def test_a_clean_archive_is_unpacked_once(make, tmp_path):
    archive = make(tmp_path)
    dest = safe_extract(archive, tmp_path / DEST)
    assert (dest / "MVSA" / "ok.txt").read_text() == "fine" and (dest / ".complete").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, DEST])
