#!/usr/bin/python3
"""Validates scenario files against scenarios/schema.json with a real JSON Schema validator
(draft 2020-12, python3-jsonschema): the same check an editor's YAML language server makes.

    ci/check-schema.py scenarios/schema.json FILE...

Prints `FILE: ok` or `FILE: error: MESSAGE (at PATH)` per file; exits 1 when one is refused.
"""
import json
import re
import sys

import jsonschema
import yaml


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `on`, `yes` and `no` are booleans; scenarios are YAML 1.2
    (Yams, and editors' language servers), where only true and false are."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    failed = False
    for path in sys.argv[2:]:
        try:
            with open(path, encoding="utf-8") as f:
                document = yaml.load(f, Loader=Yaml12Loader)
        except (OSError, yaml.YAMLError) as e:
            print(f"{path}: error: cannot read: {e}")
            failed = True
            continue
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            failed = True
            for e in errors:
                where = "/".join(str(p) for p in e.absolute_path) or "(top)"
                print(f"{path}: error: {e.message} (at {where})")
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
