"""Interop driver for the Python `cloudevents` 2.2 SDK; see ../PROTOCOL.md for the contract.

Usage: driver.py --api new|old send URL MODE CASES_FILE ID_PREFIX
       driver.py --api new|old receive OUT_FILE

`--api new` uses `cloudevents.core`, `--api old` the 1.x-style API kept as `cloudevents.v1`.
"""

import argparse
import base64
import datetime
import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def new_encode(attributes, data, mode):
    from cloudevents.core.bindings.http import to_binary, to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    if "time" in attributes:
        attributes["time"] = datetime.datetime.fromisoformat(attributes["time"])
    encode = to_binary if mode == "binary" else to_structured
    message = encode(CloudEvent(attributes, data), JSONFormat())
    return message.headers, message.body


def new_decode(headers, body):
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.formats.json import JSONFormat

    event = from_http(HTTPMessage(dict(headers), body), JSONFormat())
    return event.get_attributes(), event.get_data()


def old_encode(attributes, data, mode):
    # The 1.x docs import the encoders from `conversion` (the `http` re-exports are deprecated).
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent

    # This API takes `time` as a string (it cannot serialize a datetime), so it stays as given.
    encode = to_binary if mode == "binary" else to_structured
    return encode(CloudEvent(attributes, data))


def old_decode(headers, body):
    from cloudevents.v1.http import from_http

    event = from_http(headers, body)
    return event.get_attributes(), event.get_data()


APIS = {"new": (new_encode, new_decode), "old": (old_encode, old_decode)}


def case_data(case):
    data = case.get("data")
    if data is None:
        return None
    if "json" in data:
        return data["json"]
    if "text" in data:
        return data["text"]
    return base64.b64decode(data["bytes"])


def send(encode, url, mode, cases_file, id_prefix):
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f)
    for case in cases:
        attributes = {"specversion": "1.0", "id": id_prefix + case["id"], **case["attributes"]}
        try:
            headers, body = encode(attributes, case_data(case), mode)
            # An empty body goes as no body: urllib would otherwise add a form content type.
            request = urllib.request.Request(url, data=body or None, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as e:
            print(f"case {case['id']}: status {e.code}, body {e.read()!r}")
            return 1
        except UnicodeEncodeError as e:
            # The old API puts raw text in headers, and http.client writes them as Latin-1.
            print(f"unsendable {case['id']}: {e}", flush=True)
        except Exception as e:
            print(f"case {case['id']}: {type(e).__name__}: {e}")
            return 1
    return 0


def report_value(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def report_data(data):
    if data is None:
        return None
    if isinstance(data, str):
        return {"text": data}
    if isinstance(data, (bytes, bytearray)):
        return {"bytes": base64.b64encode(data).decode("ascii")}
    return {"json": data}


def receive(decode, out_file):
    out = open(out_file, "a", encoding="utf-8")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                attributes, data = decode(self.headers, body)
                line = {
                    "path": self.path,
                    "attributes": {k: report_value(v) for k, v in attributes.items()},
                    "data": report_data(data),
                }
            except Exception as e:
                line = {"path": self.path, "error": str(e)}
            with lock:
                out.write(json.dumps(line) + "\n")
                out.flush()
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", choices=APIS, required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    send_parser = commands.add_parser("send")
    send_parser.add_argument("url")
    send_parser.add_argument("mode", choices=["binary", "structured"])
    send_parser.add_argument("cases_file")
    send_parser.add_argument("id_prefix")
    commands.add_parser("receive").add_argument("out_file")
    args = parser.parse_args()

    encode, decode = APIS[args.api]
    if args.command == "send":
        return send(encode, args.url, args.mode, args.cases_file, args.id_prefix)
    return receive(decode, args.out_file)


if __name__ == "__main__":
    sys.exit(main())
