"""What the project reads as data, and where it writes: regular files only, read with a byte bound.

A device (`/dev/zero` never ends), a FIFO (blocks until a writer comes, maybe never) or a socket
given where a photo, an archive, a model file or a params file is expected would hang a stage or
fill its memory; a device or a symbolic link at an output path would be replaced by a regular file
(as root, under /dev). Each is refused here in one line, naming what it is.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from pipeline.common.errors import StageError

KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
}


# What the file system refuses for reasons the user can act on, each with what to do.
FILE_SYSTEM_ERRORS = {
    errno.EROFS: "the file system is read-only here: run in a clone on a writable disk",
    errno.EACCES: "this user may not read or write there: give a path of your own, or fix the permissions",
    errno.EPERM: "the operation is not permitted there: give a path of your own",
    errno.ENAMETOOLONG: "a name is longer than the file system allows (255 bytes a name, 4,096 a path)",
    errno.ELOOP: "symbolic links there point at each other",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder: give a file",
    errno.ENOENT: "no such file or folder",
}


def said(e: OSError | ValueError) -> str:
    """An OSError (or the ValueError of a NUL in a path) in words: what failed and what to do."""
    hint = FILE_SYSTEM_ERRORS.get(getattr(e, "errno", None) or -1)
    return f"{getattr(e, 'strerror', None) or e}{f' ({hint})' if hint else ''}"


class NotRegular(StageError):
    """A path that is a device, a FIFO, a socket or a folder where a file's bytes are wanted."""


class TooLarge(StageError):
    """A regular file over the byte bound its reader has."""


def kind(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def regular(path: Path | str, what: str, limit: int | None = None) -> os.stat_result:
    """The stat of `path` after its links, if that is a regular file of at most `limit` bytes;
    else a StageError naming `what` it should have been. Statting never blocks, even on a FIFO."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StageError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as e:  # a name too long, a loop of links, a NUL in the name
        raise StageError(f"{what} {str(path)[:200]!r}: {said(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(f"{what} {path} is {kind(st.st_mode)}, not a regular file")
    if limit is not None and st.st_size > limit:
        raise TooLarge(f"{what} {path} is {st.st_size:,} bytes, more than the {limit:,} it may be")
    return st


def read_bytes(path: Path | str, what: str, limit: int) -> bytes:
    """The whole of a regular file of at most `limit` bytes. Opened without blocking and checked
    again on the open descriptor, so a file swapped for a FIFO between the check and the open is
    refused too; the read stops at `limit` + 1 bytes whatever the file's size said."""
    regular(path, what, limit)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{what} {path} is {kind(st.st_mode)}, not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{what} {path} grew past the {limit:,} bytes it may be while it was read")
    return data


def replaceable(path: Path | str, what: str = "output") -> None:
    """StageError unless writing `path` by rename replaces nothing but a regular file or a folder
    (or nothing): a device, a FIFO, a socket or a symbolic link there stays as it is. The
    project's outputs are written beside their final name and renamed over it, so writing through
    a link or into a device is never what happens; `--out /dev/stdout` would instead put a regular
    file where the device was. Give a real file name instead."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise StageError(f"{what} {str(path)[:200]!r}: {said(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        raise StageError(
            f"{what} {path} is a symbolic link (to {target}): outputs are written by rename and would replace the "
            "link; give the file's own path"
        )
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise StageError(
            f"{what} {path} is {kind(st.st_mode)}: outputs are regular files written by rename, which would replace "
            "it; give a file name"
        )


FICLONE = 0x40049409  # Linux's ioctl that makes `dst` share `src`'s blocks copy-on-write (btrfs, XFS)


def _share_blocks(source, target) -> None:
    """FICLONE from one open file to another; OSError (or ImportError off Unix) where the file
    system makes no clones."""
    import fcntl

    fcntl.ioctl(target.fileno(), FICLONE, source.fileno())


def clone(src: Path | str, dst: Path | str) -> None:
    """Copy `src` to `dst` (a new file, its own inode): as a copy-on-write clone where the file
    system has them (no second copy on disk, and a write to one never reaches the other), else byte
    for byte. Never a hardlink, which an in-place write to either name would corrupt both through."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        try:
            _share_blocks(source, target)
        except (ImportError, OSError):  # ext4, tmpfs, another device, not Linux: copy the bytes
            shutil.copyfileobj(source, target, 1 << 20)


def clones(folder: Path | str) -> bool:
    """Whether the file system under `folder` makes copy-on-write clones (clone() there takes no
    space): tried on a one-byte file, removed after."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".clone-probe-") as probe:
            (Path(probe) / "a").write_bytes(b"x")
            with open(Path(probe) / "a", "rb") as source, open(Path(probe) / "b", "wb") as target:
                _share_blocks(source, target)
        return True
    except (ImportError, OSError):
        return False
