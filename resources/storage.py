"""LandingStorage: where drops arrive, as a local folder or an S3 (or S3-compatible) prefix.

    LandingStorage(url="/data/landing")
    LandingStorage(url="s3://bucket/prefix", endpoint_url="http://127.0.0.1:9000")

A drop is ``<url>/<drop_id>/``; it is complete once ``<url>/<drop_id>/_SUCCESS`` exists. Region and
credentials come from the environment as boto3 reads them (AWS_ACCESS_KEY_ID, AWS_REGION, profiles,
AWS_ENDPOINT_URL...), unless set here. S3 clients come from dagster-aws's ``S3Resource``.

File URIs are absolute local paths, or ``s3://bucket/key``; ``read_bytes`` takes either (and
``file://`` URIs).
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from dagster import ConfigurableResource
from pydantic import Field

from curation.hashing import file_sha256
from curation.landing import (
    SUCCESS_MARKER,
    TAKEDOWNS_FOLDER,
    content_fingerprint,
    drop_id_problem,
    is_hidden_part,
    validate_drop_id,
)


class DropInfo(NamedTuple):
    drop_id: str
    complete: bool  # _SUCCESS present
    n_files: int  # data files, _SUCCESS and hidden files excluded
    last_modified: datetime | None  # newest object in the drop (UTC), None when empty


class FileInfo(NamedTuple):
    uri: str
    name: str  # path relative to the drop folder, '/'-separated
    size: int
    problem: str | None = None  # why it must not be read (a symlink out of the landing folder)


def split_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/a/b/' -> ('bucket', 'a/b') ; 's3://bucket' -> ('bucket', '')."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url!r}")
    return bucket, key.strip("/")


@functools.lru_cache(maxsize=16)
def _s3_client(
    endpoint_url: str | None,
    region_name: str | None,
    profile_name: str | None,
    aws_access_key_id: str | None,
    aws_secret_access_key: str | None,
    aws_session_token: str | None,
) -> Any:
    from dagster_aws.s3 import S3Resource

    return S3Resource(
        endpoint_url=endpoint_url,
        region_name=region_name,
        profile_name=profile_name,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
    ).get_client()


class LandingStorage(ConfigurableResource):
    """The landing zone: list drops, list and read their files."""

    url: str = Field(description="local folder, or s3://bucket/prefix")
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible server (MinIO, moto...); None: AWS or env"
    )
    region_name: str | None = Field(default=None, description="None: from the environment")
    profile_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    @classmethod
    def from_env(cls) -> LandingStorage:
        """From CURATION_LANDING (required) and CURATION_S3_ENDPOINT_URL (optional)."""
        url = os.environ.get("CURATION_LANDING")
        if not url:
            raise ValueError("CURATION_LANDING is not set (a local folder or s3://bucket/prefix)")
        return cls(url=url, endpoint_url=os.environ.get("CURATION_S3_ENDPOINT_URL") or None)

    # ---- location helpers -------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def _root(self) -> Path:
        url = self.url[len("file://") :] if self.url.startswith("file://") else self.url
        return Path(url).expanduser().resolve()

    def _bucket_prefix(self) -> tuple[str, str]:
        """(bucket, key prefix ending in '/' or empty)."""
        bucket, prefix = split_s3_url(self.url)
        return bucket, (prefix + "/" if prefix else "")

    def client(self) -> Any:
        """A boto3 S3 client (cached per configuration)."""
        return _s3_client(
            self.endpoint_url,
            self.region_name,
            self.profile_name,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.aws_session_token,
        )

    def child(self, prefix: str) -> LandingStorage:
        """The same storage rooted at `<url>/<prefix>` (e.g. one pool's landing prefix)."""
        parts = [p for p in str(prefix).replace("\\", "/").split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid landing prefix {prefix!r}: '.' or '..' component")
        if not parts:
            return self
        return self.model_copy(update={"url": self.url.rstrip("/") + "/" + "/".join(parts)})

    def drop_url(self, drop_id: str) -> str:
        """Where a drop lives: an absolute folder path, or s3://bucket/prefix/drop_id."""
        validate_drop_id(drop_id)
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            return f"s3://{bucket}/{prefix}{drop_id}"
        return str(self._root() / drop_id)

    # ---- listing ------------------------------------------------------------------------------
    def list_drop_ids(self) -> list[str]:
        """Names of every drop folder (cheap: no per-file listing), sorted. Not validated."""
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            paginator = self.client().get_paginator("list_objects_v2")
            ids = set()
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(prefix) :].rstrip("/")
                    if name:
                        ids.add(name)
            return sorted(ids)
        root = self._root()
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir())

    def _objects(self, drop_id: str) -> list[tuple[str, str, int, datetime, str]]:
        """(relative name, uri, size, last_modified, content tag) of every object in the drop,
        the marker and hidden files included."""
        out = []
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            drop_prefix = f"{prefix}{drop_id}/"
            paginator = self.client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=drop_prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    name = key[len(drop_prefix) :]
                    if not name or key.endswith("/"):
                        continue  # folder marker objects
                    out.append(
                        (
                            name,
                            f"s3://{bucket}/{key}",
                            int(obj["Size"]),
                            obj["LastModified"].astimezone(UTC),
                            str(obj.get("ETag", "")).strip('"'),
                        )
                    )
            return out
        folder = self._root() / drop_id
        if not folder.is_dir() or self.drop_problem(drop_id) is not None:
            return []
        for path, problem in self._walk(folder):
            name = path.relative_to(folder).as_posix()
            if problem is not None:
                out.append((name, str(path), 0, datetime.fromtimestamp(0, UTC), problem))
                continue
            st = path.stat()
            out.append((name, str(path), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), ""))
        return out

    def _walk(self, folder: Path):
        """(path, problem) of every file under a local drop folder, never leaving the landing
        folder: symlinks are not followed into folders, and a symlink (file or folder) whose
        target is outside the landing folder is returned with a problem instead of read."""
        root = self._root()
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            base = Path(dirpath)
            for name in sorted(dirnames):
                path = base / name
                if path.is_symlink():
                    yield (
                        path,
                        _outside(path, root)
                        or ("refused: symlinked folder inside a drop (not followed)"),
                    )
            for name in sorted(filenames):
                path = base / name
                if path.is_symlink():
                    problem = _outside(path, root)
                    if problem is None and not path.is_file():
                        problem = "refused: dangling or special symlink"
                    yield path, problem
                elif path.is_file():
                    yield path, None

    def drop_problem(self, drop_id: str) -> str | None:
        """Why a drop must not be read at all (its folder is a symlink out of the landing
        folder), or None. S3 prefixes have no links: always None."""
        if self.is_s3:
            return None
        folder = self._root() / drop_id
        return _outside(folder, self._root()) if folder.is_symlink() else None

    def drop_info(self, drop_id: str) -> DropInfo:
        validate_drop_id(drop_id)
        objects = self._objects(drop_id)
        names = {o[0] for o in objects}
        data = [o for o in objects if not is_hidden_part(o[0])]
        return DropInfo(
            drop_id=drop_id,
            complete=SUCCESS_MARKER in names,
            n_files=len(data),
            last_modified=max((o[3] for o in objects), default=None),
        )

    def list_drops(self) -> list[DropInfo]:
        """Every drop with a valid id, complete or not, sorted by drop id.

        Folders whose names are not valid drop ids are left out (see `invalid_drop_ids`).
        """
        return [self.drop_info(d) for d in self.list_drop_ids() if drop_id_problem(d) is None]

    def invalid_drop_ids(self) -> dict[str, str]:
        """{folder name: problem} for folders in the landing zone that are not valid drop ids."""
        problems = {d: drop_id_problem(d) for d in self.list_drop_ids()}
        return {d: p for d, p in problems.items() if p is not None}

    def is_complete(self, drop_id: str) -> bool:
        """Cheap check for the marker (one HEAD / stat)."""
        validate_drop_id(drop_id)
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            try:
                self.client().head_object(Bucket=bucket, Key=f"{prefix}{drop_id}/{SUCCESS_MARKER}")
            except Exception as exc:  # botocore ClientError 404
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True
        return (self._root() / drop_id / SUCCESS_MARKER).is_file()

    def marker_stamp(self, drop_id: str) -> str | None:
        """A cheap token that changes when the drop's _SUCCESS marker is written again (one stat
        or HEAD), or None without a marker: the sensor re-checks a registered drop's content only
        when it changes."""
        validate_drop_id(drop_id)
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            try:
                head = self.client().head_object(
                    Bucket=bucket, Key=f"{prefix}{drop_id}/{SUCCESS_MARKER}"
                )
            except Exception as exc:  # botocore ClientError 404
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return f"{head.get('ETag', '')}|{head['LastModified'].isoformat()}"
        try:
            st = (self._root() / drop_id / SUCCESS_MARKER).stat()
        except OSError:
            return None
        return f"{st.st_mtime_ns}|{st.st_size}|{st.st_ino}"

    def list_files(self, drop_id: str) -> list[FileInfo]:
        """Data files of a drop, sorted by name; _SUCCESS and hidden files (.*) excluded."""
        validate_drop_id(drop_id)
        files = [
            FileInfo(
                uri=uri, name=name, size=size, problem=tag if tag.startswith("refused") else None
            )
            for name, uri, size, _, tag in self._objects(drop_id)
            if not is_hidden_part(name)
        ]
        return sorted(files, key=lambda f: f.name)

    def _content_entries(self, folder: str,
                         hidden: list[str] | None = None) -> list[tuple[str, str, int, str]]:
        """(name, uri, size, content tag) of a folder's data files, hidden files skipped. The
        tag is the S3 ETag (no download) or the local file's sha256, uncached: a file
        re-written in place must not look unchanged; or a refusal (symlink out of the
        landing folder)."""
        out = []
        for name, uri, size, _, tag in self._objects(folder):
            if is_hidden_part(name):
                if hidden is not None:
                    hidden.append(name)
                continue
            if not self.is_s3 and not tag.startswith("refused"):
                tag = file_sha256(Path(uri), cache=False)
            out.append((name, uri, size, tag))
        return out

    def fingerprint(self, drop_id: str) -> str:
        """Content fingerprint of a drop's data files: equal for the same files re-delivered."""
        validate_drop_id(drop_id)
        return content_fingerprint(
            [(name, size, tag) for name, _, size, tag in self._content_entries(drop_id)])

    # ---- takedown files -----------------------------------------------------------------------
    def takedown_files(self, hidden: list[str] | None = None) -> list[tuple[str, str, int, str]]:
        """(name, uri, size, content tag) of the files under `<url>/_takedowns/`, sorted. The
        names of hidden or temporary files there (a leading '.', such as an upload in
        progress), which are not applied, are appended to `hidden` (one listing)."""
        return sorted(self._content_entries(TAKEDOWNS_FOLDER, hidden))

    def takedown_file_uri(self, name: str) -> str:
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid takedown file name {name!r}")
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            return f"s3://{bucket}/{prefix}{TAKEDOWNS_FOLDER}/{'/'.join(parts)}"
        return str(self._root() / TAKEDOWNS_FOLDER / "/".join(parts))

    # ---- reading ------------------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            bucket, key = split_s3_url(uri)
            return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        problem = _outside(path, self._root())
        if problem is not None:
            raise PermissionError(f"{uri}: {problem}")
        return path.read_bytes()


def _outside(path: Path, root: Path) -> str | None:
    """A refusal when `path`, links resolved, is not inside the landing folder `root`."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return f"refused: cannot resolve the link ({type(exc).__name__})"
    if target == root or root in target.parents:
        return None
    return "refused: symlink pointing outside the landing folder"
