"""The shipped catalog is valid data: it matches its committed JSON Schema (which matches
``ModelSpec``), every entry resolves, every public name maps to an entry, every named model cites
a source; and the operator's ``catalog:`` is refused with errors that name the key."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from imagegate.catalog import Catalog, catalog_schema, default_data
from imagegate.config import ConfigError

SCHEMA = json.loads(files("imagegate").joinpath("catalog.schema.json").read_text())


def test_committed_schema_is_the_one_modelspec_makes() -> None:
    # A new ModelSpec field must reach catalog.schema.json in the same commit:
    #   python -c "import json; from imagegate.catalog import catalog_schema; print(json.dumps(catalog_schema(),
    #   indent=2, sort_keys=True))" > src/imagegate/catalog.schema.json
    assert json.loads(json.dumps(catalog_schema(), sort_keys=True)) == SCHEMA


def test_catalog_file_validates_against_its_schema() -> None:
    data = yaml.safe_load(files("imagegate").joinpath("catalog.yaml").read_text())
    Draft202012Validator.check_schema(SCHEMA)
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_every_entry_resolves_and_every_public_name_has_one() -> None:
    catalog = Catalog.load()
    data = default_data()
    assert catalog.protocols() == sorted(data)
    for protocol, section in data.items():
        models = catalog.protocol(protocol)
        for public, name in (section.get("served_as") or {}).items():
            assert models.spec(name) is not None, f"{protocol}.served_as.{public}"
        for name in section["models"]:
            spec = models.spec(name)
            if not any(c in name for c in "*?["):
                assert spec.sources, f"{protocol}.models.{name} cites no source"


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    bad = {"openai": {"models": {"x": {"max_n": "ten"}}}}
    assert list(Draft202012Validator(SCHEMA).iter_errors(bad))
    with pytest.raises(ConfigError, match=r"catalog.yaml openai.models.x.max_n"):
        Catalog.load(data=bad)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"new-model": {"like": "imagegate-shapes"}}, r"catalog.new-model.protocol: say which protocol"),
    ({"new-model": {"protocol": "nope"}}, r"catalog.new-model.protocol: unknown protocol 'nope'"),
    ({"new-model": {"protocol": "local", "max_n": 0}}, r"catalog.new-model.max_n: Input should be greater"),
    ({"new-model": {"protocol": "local", "colour": "red"}}, r"catalog.new-model.colour: unknown key"),
    ({"new-model": {"protocol": "local", "like": "missing"}}, r"catalog.new-model.like: no entry 'missing'"),
    ({"a": {"protocol": "local", "like": "b"}, "b": {"protocol": "local", "like": "a"}},
     r"catalog\.[ab]\.like: (a -> b -> a|b -> a -> b) is a loop"),
    ({"imagegate-shapes": {"sizes": ["big"]}}, r"catalog.imagegate-shapes.sizes"),
    ({"new-model": "gpt"}, r"catalog.new-model: an entry must be a mapping"),
])
def test_operator_entries_are_refused_by_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Catalog.load(overrides)


def test_like_merges_wire_and_defaults_key_by_key() -> None:
    data = {"p": {"models": {"base": {"sources": ["x"], "wire": {"a": 1, "b": 2}, "defaults": {"quality": "high"}},
                             "child": {"like": "base", "wire": {"b": 3}, "defaults": {"image_size": "2K"}}}}}
    child = Catalog.load(data=data).protocol("p").spec("child")
    assert child.wire == {"a": 1, "b": 3} and child.defaults == {"quality": "high", "image_size": "2K"}


def test_operator_entries_add_and_override() -> None:
    catalog = Catalog.load({
        "imagegate-shapes": {"max_n": 4},  # an override keeps the rest of the shipped entry
        "shapes-square": {"protocol": "local", "like": "imagegate-shapes", "upstream": "imagegate-shapes",
                          "sizes": ["512x512"], "defaults": {"size": "512x512"}},
    })
    local = catalog.protocol("local")
    base = local.spec("imagegate-shapes")
    assert (base.max_n, base.mask, base.max_side) == (4, True, 2048)
    square = local.spec("shapes-square")
    assert square.sizes == ((512, 512),) and square.max_n == 4 and square.upstream_name("shapes-square") == \
        "imagegate-shapes"
