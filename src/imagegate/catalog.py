"""The model catalog: what every upstream model accepts, as data.

``catalog.yaml`` (shipped with the package) holds one section per protocol (the ``provider:``
of a channel), each with

- ``served_as``: public name → catalog model, for a channel that lists no ``models:``;
- ``models``: one entry per upstream model, or per name pattern (``gpt-image-*``, ``*``), with
  the capabilities a ``ModelSpec`` holds; ``like: OTHER`` inherits another entry of the same
  protocol and overrides what it sets.

The operator's ``catalog:`` (config) adds entries and overrides existing ones by name, in the same
keys plus ``protocol:`` (needed when the name is new). Everything is validated once at start-up,
with errors that name the key (``catalog.gpt-image-2.max_n: ...``). Adapters read a model's
``ModelSpec`` from here and keep only the wire translation; protocol-specific facts a spec holds
for its adapter live under ``wire:``, validated by the adapter's own ``Wire`` model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imagegate.config import ConfigError
from imagegate.core.spec import ModelSpec


class _Entry(BaseModel):
    """A catalog entry as written: every ``ModelSpec`` field optional, plus ``like``."""

    model_config = ConfigDict(extra="forbid")

    like: str | None = None
    protocol: str | None = None
    """Only in the operator's ``catalog:``: the section an entry belongs to."""
    fields: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, where: str) -> _Entry:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: an entry must be a mapping of keys")
        body = dict(raw)
        like, protocol = body.pop("like", None), body.pop("protocol", None)
        unknown = sorted(set(body) - set(ModelSpec.model_fields))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key; known: like, protocol, "
                              f"{', '.join(sorted(ModelSpec.model_fields))}")
        for key in ("like", "protocol"):
            value = {"like": like, "protocol": protocol}[key]
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}.{key}: must be a name")
        return cls(like=like, protocol=protocol, fields=body)


class ProtocolCatalog:
    """The resolved entries of one protocol."""

    def __init__(self, protocol: str, specs: dict[str, ModelSpec], served_as: dict[str, str]) -> None:
        self.protocol = protocol
        self._exact = {k: v for k, v in specs.items() if not _is_pattern(k)}
        # Longest pattern first: ``gpt-image-1*`` before ``gpt-image-*`` before ``*``.
        self._patterns = sorted(((k, v) for k, v in specs.items() if _is_pattern(k)), key=lambda kv: -len(kv[0]))
        self.served_as = served_as

    def spec(self, model: str) -> ModelSpec:
        """The spec of a catalog model name; ``LookupError`` when no entry or pattern covers it."""
        if model in self._exact:
            return self._exact[model]
        for pattern, spec in self._patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return spec
        raise LookupError(model)

    def names(self) -> list[str]:
        return sorted(self._exact)


class Catalog:
    def __init__(self, protocols: dict[str, ProtocolCatalog]) -> None:
        self._protocols = protocols

    def protocol(self, name: str) -> ProtocolCatalog:
        return self._protocols.get(name) or ProtocolCatalog(name, {}, {})

    def protocols(self) -> list[str]:
        return sorted(self._protocols)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> Catalog:
        """The shipped catalog (or ``data``) with the operator's ``catalog:`` applied."""
        raw = data if data is not None else default_data()
        sections: dict[str, dict[str, _Entry]] = {}
        served: dict[str, dict[str, str]] = {}
        for protocol, section in raw.items():
            where = f"catalog.yaml {protocol}"
            if not isinstance(section, Mapping) or set(section) - {"served_as", "models"}:
                raise ConfigError(f"{where}: a protocol section holds served_as and models only")
            served[protocol] = dict(section.get("served_as") or {})
            sections[protocol] = {name: _Entry.parse(e, f"{where}.models.{name}")
                                  for name, e in (section.get("models") or {}).items()}
        for name, e in (overrides or {}).items():
            entry = _Entry.parse(e, f"catalog.{name}")
            owners = [p for p, entries in sections.items() if name in entries]
            protocol = entry.protocol or (owners[0] if len(owners) == 1 else "")
            if not protocol:
                raise ConfigError(f"catalog.{name}.protocol: say which protocol serves {name!r} "
                                  f"(one of {', '.join(sorted(sections))})")
            if protocol not in sections:
                raise ConfigError(f"catalog.{name}.protocol: unknown protocol {protocol!r}; known: "
                                  f"{', '.join(sorted(sections))}")
            old = sections[protocol].get(name)
            if old is not None and entry.like is None:  # an override: the shipped entry plus these keys
                entry = _Entry(like=old.like, fields=_merge(old.fields, entry.fields))
            sections[protocol][name] = entry
        return cls({p: ProtocolCatalog(p, _resolve(p, entries, bool(overrides)), served[p])
                    for p, entries in sections.items()})


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``; ``wire`` and ``defaults`` merge key by key (a child changes one wire
    fact without restating the others)."""
    merged = {**base, **over}
    for key in ("wire", "defaults"):
        if isinstance(base.get(key), dict) and isinstance(over.get(key), dict):
            merged[key] = {**base[key], **over[key]}
    return merged


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def _resolve(protocol: str, entries: dict[str, _Entry], operator: bool) -> dict[str, ModelSpec]:
    resolved: dict[str, dict[str, Any]] = {}

    def fields(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        entry = entries[name]
        base: dict[str, Any] = {}
        if entry.like is not None:
            if entry.like not in entries:
                raise ConfigError(f"{_where(protocol, name, operator)}.like: no entry {entry.like!r} in "
                                  f"protocol {protocol!r}")
            if entry.like in seen:
                raise ConfigError(f"{_where(protocol, name, operator)}.like: {' -> '.join((*seen, entry.like))} "
                                  "is a loop")
            base = fields(entry.like, (*seen, entry.like))
        resolved[name] = _merge(base, entry.fields)
        return resolved[name]

    specs: dict[str, ModelSpec] = {}
    for name in entries:
        try:
            specs[name] = ModelSpec.model_validate(fields(name, (name,)))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{_where(protocol, name, operator)}.{key}: {first['msg']}") from exc
    return specs


def _where(protocol: str, name: str, operator: bool) -> str:
    # An error in an entry the operator wrote or changed is named as they wrote it.
    return f"catalog.{name}" if operator else f"catalog.yaml {protocol}.models.{name}"


def default_data() -> dict[str, Any]:
    text = files("imagegate").joinpath("catalog.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def catalog_schema() -> dict[str, Any]:
    """JSON Schema of ``catalog.yaml`` (committed as ``catalog.schema.json``; CI checks both)."""
    entry = ModelSpec.model_json_schema()
    entry["properties"]["like"] = {"type": "string", "description": "Inherit this entry of the same protocol."}
    entry["properties"]["sizes"] = {  # written "1024x1536" in the file
        "anyOf": [{"type": "array", "items": {"type": "string", "pattern": r"^[1-9][0-9]*x[1-9][0-9]*$"}},
                  {"type": "null"}],
        "description": entry["properties"]["sizes"].get("description", ""),
    }
    entry.pop("required", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "imagegate model catalog",
        "type": "object",
        "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "served_as": {"type": "object", "additionalProperties": {"type": "string"},
                              "description": "Public name -> catalog model, for channels that list no models."},
                "models": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Entry"}},
            },
        },
        "$defs": {**entry.pop("$defs", {}), "Entry": entry},
    }
