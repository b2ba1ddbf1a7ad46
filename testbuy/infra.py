"""Reads infra/stack.json, the one description both the AWS template and the local stack are built from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackDescription:
    raw: dict[str, Any]
    stage: str

    @classmethod
    def load(cls, stage: str, root: Path = ROOT) -> StackDescription:
        return cls(json.loads((root / "infra" / "stack.json").read_text()), stage)

    def name(self, template: str) -> str:
        return template.replace("{stage}", self.stage)

    @property
    def tables(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw["tables"])

    @property
    def functions(self) -> dict[str, str]:
        """ASL placeholder -> Chalice lambda_function name."""
        return dict(self.raw["functions"])

    def asl(self, machine: str, root: Path = ROOT) -> str:
        return (root / str(self.raw["state_machines"][machine]["file"])).read_text()

    def table_definition(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Name, keys, attribute definitions and indexes of a table, on demand. The same property names serve
        boto3's ``create_table`` (local stack) and ``AWS::DynamoDB::Table`` (the deployable template)."""

        def keys(hash_key: str, range_key: str) -> list[dict[str, str]]:
            return [{"AttributeName": hash_key, "KeyType": "HASH"}, {"AttributeName": range_key, "KeyType": "RANGE"}]

        attrs = set(spec["key"])
        definition: dict[str, Any] = {
            "TableName": self.name(spec["name"]),
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": keys(*spec["key"]),
        }
        gsis = []
        for index, (hash_key, range_key) in spec["indexes"].items():
            attrs |= {hash_key, range_key}
            gsis.append(
                {"IndexName": index, "KeySchema": keys(hash_key, range_key), "Projection": {"ProjectionType": "ALL"}}
            )
        definition["AttributeDefinitions"] = [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attrs)]
        if gsis:
            definition["GlobalSecondaryIndexes"] = gsis
        return definition

    def function_name(self, task: str) -> str:
        """The deployed function name, as Chalice names it: ``<app>-<stage>-<name>``."""
        return f"testbuy-{self.stage}-{task}"
