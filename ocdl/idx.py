"""Reading IDX files (the format of the MNIST files), raw or gzip-compressed.

An IDX file is a 4-byte magic number ``0x00 0x00 TT NN`` (TT the element type, NN the number of
dimensions), NN big-endian unsigned 32-bit sizes, then the elements in row-major order, big-endian.
Types: 0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
A file is taken as gzip data when it begins with gzip's two bytes 0x1F 0x8B (whatever its name),
else as raw IDX. Every fault (missing or unreadable file, corrupt gzip data, wrong magic number,
a type or dimension other than the caller's, fewer or more bytes than the header promises) raises
:class:`~ocdl.errors.OcdlError` with one line naming the file.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ocdl.errors import OcdlError

__all__ = ["TYPES", "read", "magic"]

#: IDX type code → (big-endian NumPy dtype, name).
TYPES = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "int16"),
    0x0C: (">i4", "int32"),
    0x0D: (">f4", "float32"),
    0x0E: (">f8", "float64"),
}

_CHUNK = 1 << 20


def magic(code: int, ndim: int) -> int:
    """The magic number of an IDX file of type ``code`` with ``ndim`` dimensions."""
    return (code << 8) | ndim


def _read_exact(f, n: int) -> bytes:
    """Up to ``n`` bytes, in chunks: memory follows the data present, not a header's claim."""
    parts, got = [], 0
    while got < n:
        b = f.read(min(_CHUNK, n - got))
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def read(path: str | Path, *, code: int | None = None, ndim: int | None = None, what: str = "IDX file") -> np.ndarray:
    """The array of the IDX file ``path`` (native byte order, the file's dtype and shape).

    ``code`` and ``ndim``, when given, are the element type and number of dimensions the caller
    expects; another magic number is refused before the data are read. ``what`` names the file in
    messages (e.g. ``"MNIST file"``)."""
    p = Path(path)
    where = f"{what} {str(p)!r}"
    if p.is_dir():
        raise OcdlError(f"{where} is a directory")
    if not p.is_file():
        raise OcdlError(f"{where} does not exist")
    try:
        with open(p, "rb") as raw:
            if raw.read(2) == b"\x1f\x8b":
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _parse(f, where, code, ndim, p.stat().st_size, compressed=True)
            raw.seek(0)
            return _parse(raw, where, code, ndim, p.stat().st_size, compressed=False)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise OcdlError(f"{where}: truncated or corrupt gzip data ({_first_line(e)})") from None
    except OSError as e:
        raise OcdlError(f"{where}: cannot read: {e.strerror or _first_line(e)}") from None


def _parse(f, where, code, ndim, file_size, compressed):
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise OcdlError(f"{where}: truncated: {len(head)} bytes, shorter than the 4-byte IDX magic number")
    m = struct.unpack(">I", head)[0]
    if head[:2] != b"\0\0" or head[2] not in TYPES or head[3] == 0:
        raise OcdlError(f"{where}: not an IDX file: magic number 0x{m:08X} (IDX: 0x0000 type dims, "
                        f"e.g. 0x00000803 for images of bytes)")
    t, nd = head[2], head[3]
    if code is not None and ndim is not None and (t, nd) != (code, ndim):
        raise OcdlError(f"{where}: wrong magic number 0x{m:08X} ({TYPES[t][1]}, {nd}-D); expected "
                        f"0x{magic(code, ndim):08X} ({TYPES[code][1]}, {ndim}-D)")
    dims_raw = _read_exact(f, 4 * nd)
    if len(dims_raw) < 4 * nd:
        raise OcdlError(f"{where}: truncated: the header ends after {4 + len(dims_raw)} of {4 + 4 * nd} bytes")
    shape = struct.unpack(f">{nd}I", dims_raw)
    dtype = np.dtype(TYPES[t][0])
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    header = 4 + 4 * nd
    if not compressed and header + nbytes > file_size:  # refused before reading a false claim
        raise OcdlError(f"{where}: truncated: the header promises {nbytes} bytes of data (shape "
                        f"{_shape(shape)}), the file holds {file_size - header}")
    data = _read_exact(f, nbytes)
    if len(data) < nbytes:
        raise OcdlError(f"{where}: truncated: the header promises {nbytes} bytes of data (shape "
                        f"{_shape(shape)}), the file holds {len(data)}")
    extra = len(_read_exact(f, 1))
    if extra:
        raise OcdlError(f"{where}: more bytes than the header's shape {_shape(shape)} holds "
                        f"({nbytes} bytes of data); not an IDX file of that shape")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _shape(shape) -> str:
    return " × ".join(map(str, shape))


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200] or type(e).__name__
