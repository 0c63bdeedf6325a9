"""``python -m examples.taskapp seed [--db PATH]``: create the tables and the demo data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from examples.taskapp.demo import seed


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m examples.taskapp")
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed", help="create the tables and the demo data")
    seeding.add_argument(
        "--db",
        default=os.environ.get("TASKAPP_DB_PATH", "taskapp.sqlite3"),
        help="the SQLite file (default $TASKAPP_DB_PATH or taskapp.sqlite3); must not exist",
    )
    args = parser.parse_args(argv)
    path = Path(args.db)
    if path.exists():
        parser.error(f"{path} exists; seed a fresh file")
    summary = seed(path)
    sys.stdout.write(f"seeded {path}: {summary}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
