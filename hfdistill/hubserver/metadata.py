"""Model card metadata (the YAML block at the top of README.md): parsed with bounds, checked like the Hub does.

Why bounds: the card is written by any token holder but read by every listing and every `model_info`. A 351-byte
YAML alias bomb expands to megabytes when serialised, and a card whose `tags` is `[{a: 1}]` or whose `base_model`
is `5` used to make `/api/models` fail for everyone. So a commit whose README metadata is malformed is refused with
a 400 naming the field (as the Hub does), and cards already in storage are read leniently: the malformed keys are
dropped, the rest is served.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

import yaml

# The Hub client's own pattern for the metadata block (huggingface_hub.repocard.REGEX_YAML_BLOCK).
YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
MAX_README_READ = 1 << 20       # metadata is looked for in the first MiB of README.md
MAX_YAML_CHARS = 64 * 1024      # the metadata block itself (real cards with a model-index are a few KiB)
MAX_VALUES = 10_000             # scalars + containers after alias expansion: bounds every later walk / dump
MAX_DEPTH = 64


class MetadataError(ValueError):
    """README metadata the Hub would refuse; the message names the field."""


def split_card(text: str) -> tuple[str | None, str]:
    """(YAML block or None, Markdown body)."""
    m = YAML_BLOCK.search(text)
    return (m.group(2), text[m.end():]) if m else (None, text)


def load(text: str) -> dict[str, Any]:
    """The metadata of a README as JSON-ready data ({} without a block); MetadataError when it is malformed."""
    block, _ = split_card(text)
    if block is None:
        return {}
    if len(block) > MAX_YAML_CHARS:
        raise MetadataError(f"metadata block is larger than {MAX_YAML_CHARS} characters")
    try:
        data = yaml.load(block, Loader=yaml.SafeLoader)  # pure-Python loader: deep nesting is a RecursionError
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise MetadataError(f"YAML error: {' '.join(str(exc).split())[:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MetadataError("metadata must be a YAML mapping (key: value lines)")
    return _json_ready(data, [MAX_VALUES], 0)


def _json_ready(obj: Any, budget: list[int], depth: int) -> Any:
    """A copy that JSON can serialise, refusing to grow past MAX_VALUES: YAML aliases share objects, so a tiny
    document can stand for an exponential (or, with a self-reference, infinite) tree."""
    budget[0] -= 1
    if budget[0] < 0:
        raise MetadataError(f"metadata expands to more than {MAX_VALUES} values (YAML anchors/aliases?)")
    if depth > MAX_DEPTH:
        raise MetadataError(f"metadata is nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        return {str(k): _json_ready(v, budget, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_json_ready(v, budget, depth + 1) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return obj.isoformat()
    if isinstance(obj, bytes):  # !!binary
        return obj.decode("utf-8", "replace")
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")  # lone surrogates from "\ud800" escapes
    return obj


def _strings(v: Any, allow_str: bool = True) -> bool:
    return (allow_str and isinstance(v, str)) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def _model_index_problem(v: Any) -> str | None:
    """What huggingface_hub's `model_index_to_eval_results` needs, so `model_info(...).card_data` parses."""
    if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
        return "must be a list of mappings"
    for i, e in enumerate(v):
        if not isinstance(e.get("name"), str) or not isinstance(e.get("results"), list):
            return f"[{i}] needs a string 'name' and a list 'results'"
        for j, r in enumerate(e["results"]):
            if not (isinstance(r, dict) and isinstance(r.get("task"), dict) and isinstance(r.get("dataset"), dict)
                    and isinstance(r.get("metrics"), list)):
                return f"[{i}].results[{j}] needs mappings 'task', 'dataset' and a list 'metrics'"
            if not (isinstance(r["task"].get("type"), str) and isinstance(r["dataset"].get("type"), str)
                    and isinstance(r["dataset"].get("name"), str)):
                return f"[{i}].results[{j}] needs string task.type, dataset.type and dataset.name"
            if not all(isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in r["metrics"]):
                return f"[{i}].results[{j}].metrics entries need a string 'type' and a 'value'"
    return None


# field → (check, what it must be). Fields not listed are free-form, as on the Hub.
RULES = {
    "tags": (_strings, "a string or a list of strings"),
    "datasets": (_strings, "a string or a list of strings"),
    "metrics": (_strings, "a string or a list of strings"),
    "language": (_strings, "a string or a list of strings"),
    "base_model": (_strings, "a string or a list of strings"),
    "license": (lambda v: isinstance(v, str), "a string"),
    "library_name": (lambda v: isinstance(v, str), "a string"),
    "pipeline_tag": (lambda v: isinstance(v, str), "a string"),
    "base_model_relation": (lambda v: isinstance(v, str), "a string"),
    "model_name": (lambda v: isinstance(v, str), "a string"),
}


def problems(meta: dict[str, Any]) -> dict[str, str]:
    """Field → why it is malformed (empty when the metadata is fine). None values are allowed (absent)."""
    out = {}
    for key, value in meta.items():
        if value is None:
            continue
        if key == "model-index":
            if (why := _model_index_problem(value)) is not None:
                out[key] = why
        elif key in RULES and not RULES[key][0](value):
            out[key] = f"must be {RULES[key][1]}"
    return out


def check(text: str) -> None:
    """Refuse README text whose metadata the Hub would refuse (MetadataError, one line naming the field)."""
    bad = problems(load(text))
    if bad:
        raise MetadataError("; ".join(f'"{k}" {why}' for k, why in bad.items()))


def lenient(text: str) -> dict[str, Any]:
    """The metadata to serve for a README already stored: the well-formed keys only ({} when it does not parse)."""
    try:
        meta = load(text)
    except MetadataError:
        return {}
    bad = problems(meta)
    return {k: v for k, v in meta.items() if k not in bad and v is not None}


def card_metadata(storage: Any, commit: Any) -> dict[str, Any] | None:
    """The well-formed YAML metadata of the commit's README.md, as the Hub exposes it in `cardData`."""
    entry = commit.files.get("README.md")
    if entry is None:
        return None
    try:
        text = storage.read_object(entry.sha256, MAX_README_READ).decode("utf-8", "replace")
    except OSError:
        return None
    return lenient(text) or None


def as_list(value: Any) -> list[Any]:
    """A metadata value that may be one string or a list, as a list."""
    return [value] if isinstance(value, str) else list(value or [])
