"""Locating a GGUF model file and reading the little metadata needed before loading it.

`resolve_model_path` turns a backend's `path` (a file path, or `package:<package>/<file>` for a
model shipped inside an installed Python package) into a checked file path, without importing
the package. `read_train_context` reads `<arch>.context_length` from the GGUF header so the
engine can size its context before the (much larger) model load. No llama_cpp here.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from typing import BinaryIO

from modelport.core.catalog import ConfigError

PACKAGE_PREFIX = "package:"
_GGUF_MAGIC = b"GGUF"

# GGUF value types and the byte size of the fixed-size ones.
_STRING = 8
_ARRAY = 9
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_INT_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}


def resolve_model_path(path: str) -> Path:
    """The model file `path` names; `ConfigError` saying what is missing if there is none."""
    if path.startswith(PACKAGE_PREFIX):
        package, _, file_name = path[len(PACKAGE_PREFIX) :].partition("/")
        if not package or not file_name:
            raise ConfigError(
                f"llamacpp path {path!r}: expected 'package:<python package>/<file name>'"
            )
        try:
            # find_spec locates a top-level package without importing it (whose __init__
            # may pull heavy or absent dependencies).
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"llamacpp path {path!r}: cannot look up {package!r}: {exc}"
            ) from None
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"llamacpp path {path!r}: Python package {package!r} is not installed "
                f"(install it, or point path at a .gguf file)"
            )
        candidate = Path(next(iter(spec.submodule_search_locations))) / file_name
    else:
        candidate = Path(path).expanduser()
    if not candidate.is_file():
        raise ConfigError(f"llamacpp path {path!r}: model file {str(candidate)!r} does not exist")
    return candidate


def read_train_context(path: Path) -> int | None:
    """The context length the model was trained with, from its GGUF header; None if absent.

    Reads key/value pairs only until it has `general.architecture` and
    `<architecture>.context_length`, which converters write before the large tokenizer arrays.
    """
    try:
        with path.open("rb") as file:
            return _scan_header(file)
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read GGUF header of {str(path)!r}: {exc}") from None


def _scan_header(file: BinaryIO) -> int | None:
    if file.read(4) != _GGUF_MAGIC:
        raise ConfigError(f"{file.name!r} is not a GGUF model file")
    (version,) = struct.unpack("<I", file.read(4))
    if version < 2:
        return None  # GGUF v1 (2023) used 32-bit counts; llama.cpp itself no longer loads it
    _tensor_count, kv_count = struct.unpack("<QQ", file.read(16))
    architecture: str | None = None
    contexts: dict[str, int] = {}
    for _ in range(kv_count):
        key = _read_string(file)
        (value_type,) = struct.unpack("<I", file.read(4))
        if key == "general.architecture" and value_type == _STRING:
            architecture = _read_string(file)
        elif key.endswith(".context_length") and value_type in _INT_FORMATS:
            fmt = _INT_FORMATS[value_type]
            (contexts[key],) = struct.unpack(fmt, file.read(struct.calcsize(fmt)))
        else:
            _skip_value(file, value_type)
        if architecture is not None and f"{architecture}.context_length" in contexts:
            return contexts[f"{architecture}.context_length"]
    return None


def _read_string(file: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", file.read(8))
    return file.read(length).decode("utf-8")


def _skip_value(file: BinaryIO, value_type: int) -> None:
    if value_type in _FIXED_SIZES:
        file.seek(_FIXED_SIZES[value_type], 1)
    elif value_type == _STRING:
        (length,) = struct.unpack("<Q", file.read(8))
        file.seek(length, 1)
    elif value_type == _ARRAY:
        element_type, count = struct.unpack("<IQ", file.read(12))
        if element_type in _FIXED_SIZES:
            file.seek(_FIXED_SIZES[element_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(file, element_type)
    else:
        raise ConfigError(f"{file.name!r}: unknown GGUF value type {value_type}")
