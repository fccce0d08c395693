#!/usr/bin/env python3
"""A webhook receiver for the demo: answers every POST with 200 and appends
{"path": ..., "body": ...} as one JSON line to the log file, so the demo can show what the
NOC and the duty manager were told (firing, acknowledged, resolved).
Usage: webhook.py PORT LOGFILE"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, LOG = int(sys.argv[1]), sys.argv[2]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path, "body": parsed}) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
