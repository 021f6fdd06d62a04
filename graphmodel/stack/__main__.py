"""``python -m graphmodel.stack up|down|status|restart-neo4j``."""

from __future__ import annotations

import argparse
import json
import sys

from graphmodel.stack import StackError, browser_lines, down, load_config, restart_neo4j, status, up


def _print_table(report: dict) -> None:
    for service, entry in report.items():
        state = "healthy" if entry.get("healthy") else entry.get("problem", "unhealthy")
        pid = entry.get("pid") or "-"
        print(f"{service:8} {entry['address']:28} pid {pid!s:8} {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graphmodel.stack",
        description="Run Neo4j (with Neo4j Browser), an S3 server and the NeurFlow guide locally, "
        "without Docker. "
        "Configuration comes from NEURFLOW_* environment variables (see docs/services.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the services (no-op for those already running)")
    for service in ("neo4j", "s3", "guide"):
        start.add_argument(f"--no-{service}", action="store_true", help=f"do not start {service}")
    start.add_argument("--timeout", type=float, default=180, help="seconds to wait for health")
    commands.add_parser("down", help="stop the services")
    show = commands.add_parser("status", help="show what runs and whether it answers")
    show.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("restart-neo4j", help="stop and start Neo4j")
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        if args.command == "up":
            report = up(
                cfg,
                neo4j=not args.no_neo4j,
                s3=not args.no_s3,
                guide=not args.no_guide,
                timeout=args.timeout,
            )
            _print_table(report)
            for line in browser_lines(cfg, report):
                print(line)
        elif args.command == "down":
            down(cfg)
            print("stopped")
        elif args.command == "restart-neo4j":
            _print_table({"neo4j": restart_neo4j(cfg)})
        else:
            report = status(cfg)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                _print_table(report)
            return 0 if all(entry["healthy"] for entry in report.values()) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
