"""`python -m sandlot.api`: run the server (what `sandlot serve` does)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sandlot.api import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandlot.api", description="Run the Sandlot API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7770)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--images-dir", type=Path, default=None)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in the data dir)")
    parser.add_argument("--default-template", default="base")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(
        args.host,
        args.port,
        args.data_dir,
        log_level=args.log_level,
        images_dir=args.images_dir,
        database_url=args.database_url,
        default_template=args.default_template,
    )


if __name__ == "__main__":
    main()
