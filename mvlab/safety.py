"""Keeping secrets and other users out: credentials masked wherever a URL is printed or logged,
and caches whose contents get loaded or reused only when no one else could have written them.

Torch-free and imports nothing of mvlab but ``errors``, so the scan kernels, the data cache, the
study runner and the CLI can all use it (docs/security.md says what each protects)."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from mvlab.errors import UserError

MASK = "***"
# scheme://rest, up to whitespace (a URL inside a command line or an error message; a quote
# may be part of a password, so it does not end the URL)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
# password=... in a query string or a libpq keyword string ("host=db password=secret")
_SECRET_PARAM = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api_key|access_key)=([^&\s]+)")


class UnsafePathError(UserError):
    """A cache or output location that another user could write (or that is not ours)."""


def mask_url(url: str, placeholder: str | None = MASK) -> str:
    """``url`` with its password replaced by ``***`` (``user:***@host``); with
    ``placeholder=None`` the password is dropped (``user@host``), which libpq completes from
    ``PGPASSWORD``/``~/.pgpass`` and MLflow from ``MLFLOW_TRACKING_PASSWORD``."""
    scheme, sep, rest = url.partition("://")
    if sep:
        userinfo, at, host = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if at and colon and "/" not in user:
            rest = f"{user}:{placeholder}@{host}" if placeholder is not None else f"{user}@{host}"
        url = scheme + sep + rest
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", url)


def mask_credentials(text: str) -> str:
    """Every URL in free text (a command line, an error message) with its password masked."""
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={MASK}",
                             _URL.sub(lambda m: mask_url(m.group(0)), text))


def current_uid() -> int:
    """The user whose files are trusted (tests replace it to check the ownership rule)."""
    return os.geteuid()


def private_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a directory only this user can write: created with mode 0700 when missing,
    refused (``UnsafePathError``) when it belongs to someone else or others can write to it."""
    path = Path(path)
    if not path.is_dir():
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UnsafePathError(f"{what} {path}: cannot create it ({exc.strerror or exc}); "
                                  f"point it at a folder of yours") from None
    check_trusted(path, what)
    return path


def check_trusted(path: str | os.PathLike, what: str) -> None:
    """Refuse ``path`` unless it is owned by this user and not writable by group or others: a
    file or folder someone else could have written is never loaded or reused."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnsafePathError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    uid = current_uid()
    if info.st_uid != uid:
        raise UnsafePathError(
            f"{what} {path} belongs to {_user_name(info.st_uid)}, not to you "
            f"({_user_name(uid)}); mvlab loads only what you wrote: remove it or use a "
            f"folder of your own (set $MVLAB_CACHE)")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(w for bit, w in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "everyone"))
                           if info.st_mode & bit)
        raise UnsafePathError(
            f"{what} {path} is writable by {who} (mode {stat.filemode(info.st_mode)}), so anyone "
            f"there could have replaced what it holds; run `chmod go-w {path}` after checking "
            f"its contents, or delete it")


def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Before any work: ``path`` can be written as a file (its folder exists or can be made, it
    is not a folder, and the folder is writable). Raises ``UserError`` with what to change."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name, e.g. {path / 'result.json'}")
    _check_creatable_dir(path.parent, what, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path}: the file is read-only; choose another path")
    return path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Before any work: ``path`` is (or can be made) a writable folder."""
    path = Path(path)
    _check_creatable_dir(path, what, path)
    return path


def _check_creatable_dir(folder: Path, what: str, target: Path) -> None:
    existing = folder
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: nothing can be created through it
            raise UserError(f"{what} {target}: {existing} is a broken symbolic link; choose "
                            f"another path")
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {target}: {existing} is a file, not a folder; choose another "
                        f"path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {target}: cannot write in {existing} (permission denied); "
                        f"choose a writable folder")
