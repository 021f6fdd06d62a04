"""Static HTTP server for Neo4j Browser, standing in for the HTTP side of a Neo4j server.

Serves the unpacked ``org.neo4j.client:neo4j-browser`` files at ``/`` (and ``/browser/``), and
answers ``GET /`` with ``Accept: application/json`` the way Neo4j's discovery endpoint does, so
Browser pre-fills the Bolt address of the local Neo4j. Standard library only: the stack runs this
file by path in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class BrowserHandler(SimpleHTTPRequestHandler):
    discovery: bytes = b"{}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/" and "application/json" in self.headers.get("Accept", ""):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.discovery)))
            self.end_headers()
            self.wfile.write(self.discovery)
            return
        if path == "/browser":
            self.send_response(301)
            self.send_header("Location", "/browser/")
            self.end_headers()
            return
        if path.startswith("/browser/"):
            self.path = self.path[len("/browser") :]
        super().do_GET()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith(("4", "5")):
            super().log_request(code, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="directory holding Browser's index.html")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7474)
    parser.add_argument("--bolt", required=True, help="Bolt URI that Browser should connect to")
    parser.add_argument("--neo4j-version", default="5.26")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.root, "index.html")):
        parser.error(f"--root {args.root} has no index.html")
    BrowserHandler.discovery = json.dumps(
        {"bolt_direct": args.bolt, "neo4j_version": args.neo4j_version, "neo4j_edition": "community"}
    ).encode()
    handler = partial(BrowserHandler, directory=args.root)
    server = ThreadingHTTPServer((args.host, args.port), handler)
    print(f"neurflow-browser: serving {args.root} on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
