"""The generated reference pages of the documentation: every setting.

`python -m stream.docs` (or `crm-kpi docs`) writes `docs/settings.md` from the
settings class; a unit test fails while the committed page differs from it.
"""

from __future__ import annotations

import argparse
import json
import types
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from stream.settings import Settings

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[1] / "docs"
"""Where the committed pages live: the repository's `docs` folder."""

SETTINGS_PAGE = "settings.md"

_SCALARS: dict[Any, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "boolean",
    Decimal: "decimal",
    Path: "path",
    SecretStr: "secret text",
}
"""How each Python type reads to someone writing an environment variable."""

_PLURALS: dict[Any, str] = {str: "strings", Decimal: "decimals"}
"""The items of a JSON object or array setting."""

_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def render_settings_doc(model: type[BaseSettings] = Settings) -> str:
    """Return the Markdown page listing every setting, in declaration order.

    The page shows each setting's environment variable, the type of value it
    takes with its bounds, its default as one would write it, and its
    description. Nothing of the running environment goes into it.

    Args:
        model: the settings class to describe; the project's by default.

    Raises:
        TypeError: a setting has a type the page has no wording for.
    """
    prefix = model.model_config.get("env_prefix") or ""
    rows = [
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        cells = (
            f"`{prefix}{name.upper()}`",
            _type_of(field),
            _default_of(field),
            field.description or "",
        )
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")

    return "\n".join(
        [
            "# Settings",
            "",
            "<!-- Generated from stream/settings.py by `crm-kpi docs`;"
            " do not edit by hand. -->",
            "",
            f"Every setting is an environment variable with the `{prefix}` prefix,"
            " or a line",
            "of a `.env` file in the working directory; the environment wins over"
            " the file.",
            "An object or array is given as JSON, for example",
            '`CRM_RATES=\'{"EUR": "1", "USD": "0.92"}\'`. An optional'
            " setting left unset",
            "has no value. The settings are read once, when a command starts.",
            "",
            *rows,
            "",
        ]
    )


def write_docs(directory: Path) -> list[Path]:
    """Write every generated page under `directory`; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SETTINGS_PAGE
    path.write_text(render_settings_doc(), encoding="utf-8", newline="\n")
    return [path]


def _type_of(field: FieldInfo) -> str:
    """Describe the type of a field with its bounds, as a user would write it."""
    text = _type_name(field.annotation)
    bounds = [
        f"{sign} {_number(getattr(meta, key))}"
        for meta in field.metadata
        for key, sign in _BOUNDS
        if getattr(meta, key, None) is not None
    ]
    patterns = [
        f"matching `{meta.pattern}`"
        for meta in field.metadata
        if getattr(meta, "pattern", None) is not None
    ]
    parts = [text, " and ".join(bounds), *patterns]
    return " ".join(part for part in parts if part)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    arguments = get_args(annotation)

    if origin in (Union, types.UnionType) and type(None) in arguments:
        rest = [argument for argument in arguments if argument is not type(None)]
        return f"{' or '.join(_type_name(argument) for argument in rest)}, optional"
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in arguments)
    if origin is dict and arguments[1] in _PLURALS:
        return f"JSON object of {_PLURALS[arguments[1]]}"
    if origin is list and arguments[0] in _PLURALS:
        return f"JSON array of {_PLURALS[arguments[0]]}"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no description of the settings type {annotation!r}")


def _default_of(field: FieldInfo) -> str:
    """Render a field's default as the value of its environment variable."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return f"`{json.dumps({key: str(item) for key, item in value.items()})}`"
    if isinstance(value, list):
        return f"`{json.dumps([str(item) for item in value])}`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    return f"`{value}`" if str(value) else '`""`'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    # A pipe would end the table cell early.
    return text.replace("|", "\\|")


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the reference pages; the command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m stream.docs",
        description="Write the generated reference pages (docs/settings.md).",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_DIRECTORY,
        help="folder to write to (default: the repository's docs folder)",
    )
    arguments = parser.parse_args(argv)

    for path in write_docs(arguments.directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
