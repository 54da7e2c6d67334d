"""Publication of the wire contract as JSON Schema files, for producers and readers.

`python -m schemas.publish` regenerates the committed files under
`schemas/json/`; a unit test fails while they differ from the models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from schemas.api import api_json_schemas
from schemas.dead_letters import DeadLetter
from schemas.events import EVENT_ADAPTER, EVENT_MODELS, EVENT_TYPES
from schemas.kpis import KpiSnapshot

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

DEFAULT_DIRECTORY = Path(__file__).parent / "json"
"""Where the committed schema files live."""


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return every published schema by its path relative to the schema folder.

    Events are described as producers send them (validation mode); KPI
    snapshots and dead letters as the project writes them (serialization
    mode). The event schemas list channel, lost reason and complaint category
    as closed enums, which is what producers should send; the worker itself is
    lenient there and reads an unknown value as `other`.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for event_type, model in zip(EVENT_TYPES, EVENT_MODELS, strict=True):
        schemas[f"events/{event_type}.json"] = model.model_json_schema()

    union = EVENT_ADAPTER.json_schema()
    union["title"] = "Event"
    union["description"] = "Any CRM event; the `type` field selects the schema."
    schemas["event.json"] = union

    schemas["kpi-snapshot.json"] = KpiSnapshot.model_json_schema(mode="serialization")
    schemas["dead-letter.json"] = DeadLetter.model_json_schema(mode="serialization")
    schemas.update(api_json_schemas())
    return {
        path: {"$schema": SCHEMA_DIALECT, **schema} for path, schema in schemas.items()
    }


def render(schema: dict[str, Any]) -> str:
    """Return a schema as the text of its file: sorted keys, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_schemas(directory: Path) -> list[Path]:
    """Write every published schema under `directory` and return their paths.

    Files of event types that no longer exist are removed from
    `directory/events`, so that the folder always matches the models.
    """
    schemas = json_schemas()
    events = directory / "events"
    events.mkdir(parents=True, exist_ok=True)

    for path in sorted(events.glob("*.json")):
        if f"events/{path.name}" not in schemas:
            path.unlink()

    written: list[Path] = []
    for relative, schema in sorted(schemas.items()):
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(schema), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Regenerate the schema files; the command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas.publish",
        description="Write the JSON Schemas of events, KPI snapshots and dead letters.",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_DIRECTORY,
        help="folder to write to (default: the package's json folder)",
    )
    arguments = parser.parse_args(argv)

    written = write_json_schemas(arguments.directory)
    print(f"wrote {len(written)} JSON Schema files to {arguments.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
