#!/usr/bin/env python
"""Write the service's OpenAPI document to docs/openapi.json (no model is loaded).

    python scripts/export_openapi.py [--output docs/openapi.json] [--check]

``--check`` exits 1 when the file differs from what the app serves (tests/integration/test_server.py checks the
same thing).
"""

import argparse
import json
import sys
from pathlib import Path

from bayesian_hf.serving import ServeSettings, create_app

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def render() -> str:
    schema = create_app(ServeSettings(model="unused")).openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if json.loads(current or "null") != json.loads(text):
            print(f"{args.output} is stale: run python scripts/export_openapi.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
