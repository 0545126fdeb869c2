"""Interop check with an independent CloudEvents SDK (the Python `cloudevents` 2.x package).

Sends events built by the SDK to a Switchyard broker in binary and structured mode, receives
them on a plain Python HTTP subscriber, decodes them with the same SDK, and checks that every
attribute and every data byte arrived unchanged (Switchyard adds only `knativearrivaltime`).

Usage: sdk_roundtrip.py SERVER_URL NAMESPACE BROKER   (the broker must exist). Exit 0 on success.
"""

import datetime
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings.http import HTTPMessage, from_http, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

RECEIVED = []
LOCK = threading.Lock()


class Subscriber(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with LOCK:
            RECEIVED.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def request(method, url, body=None, headers=None):
    # An empty body goes as no body: urllib would otherwise add a form content type.
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as response:
        return response.status


def events(mode):
    offset = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
    yield CloudEvent(
        attributes={
            "specversion": "1.0", "id": f"{mode}-json", "source": "https://example.com/orders",
            "type": "com.example.order.created", "subject": "Bestellung für Zoë 100%",
            "time": datetime.datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=offset),
            "datacontenttype": "application/json", "dataschema": "https://example.com/schema/1",
            "tenant": "acme corp", "partitionkey": "k-1",
        },
        data={"items": [{"sku": "A1", "qty": 2}], "note": "ünïcode", "nested": {"x": None}},
    )
    yield CloudEvent(
        attributes={
            "specversion": "1.0", "id": f"{mode}-bytes", "source": "/sensors/7", "type": "com.example.reading",
            "datacontenttype": "application/octet-stream",
        },
        data=bytes(range(256)),
    )
    yield CloudEvent(
        attributes={
            "specversion": "1.0", "id": f"{mode}-text", "source": "/logs", "type": "com.example.line",
            "datacontenttype": "text/plain; charset=utf-8",
        },
        data="a line of text, with \"quotes\" and a tab\t",
    )
    yield CloudEvent(
        attributes={"specversion": "1.0", "id": f"{mode}-nodata", "source": "/empty", "type": "com.example.ping"},
    )


def comparable(event):
    attributes = dict(event.get_attributes())
    attributes.pop("knativearrivaltime", None)
    return attributes, event.get_data()


def main():
    server_url, namespace, broker = sys.argv[1:4]
    subscriber = ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
    threading.Thread(target=subscriber.serve_forever, daemon=True).start()
    subscriber_url = f"http://127.0.0.1:{subscriber.server_address[1]}/"
    trigger = json.dumps({"spec": {"broker": broker, "subscriber": {"uri": subscriber_url}}}).encode()
    request("PUT", f"{server_url}/v1/namespaces/{namespace}/triggers/python-interop", trigger,
            {"content-type": "application/json"})

    sent = {}
    for mode, encode in (("binary", to_binary), ("structured", to_structured)):
        for event in events(mode):
            message = encode(event, JSONFormat())
            status = request("POST", f"{server_url}/{namespace}/{broker}", message.body, dict(message.headers))
            if status != 202:
                print(f"{event.get_id()}: ingest answered {status}")
                return 1
            sent[event.get_id()] = (event, message)

    deadline = time.time() + 30
    while time.time() < deadline:
        with LOCK:
            if len(RECEIVED) >= len(sent):
                break
        time.sleep(0.05)

    failures = []
    with LOCK:
        received = list(RECEIVED)
    by_id = {}
    for headers, body in received:
        event = from_http(HTTPMessage(headers=headers, body=body), JSONFormat())
        by_id[event.get_id()] = (event, headers, body)
    for event_id, (original, message) in sent.items():
        if event_id not in by_id:
            failures.append(f"{event_id}: never delivered")
            continue
        delivered, headers, body = by_id[event_id]
        if comparable(delivered) != comparable(original):
            failures.append(f"{event_id}: sent {comparable(original)!r}, delivered {comparable(delivered)!r}")
        if not headers.get("ce-knativearrivaltime"):
            failures.append(f"{event_id}: no knativearrivaltime")
        if event_id.startswith("binary-"):
            # Binary in, binary out: the very header values and body bytes the SDK sent.
            for name, value in message.headers.items():
                if headers.get(name.lower()) != value:
                    failures.append(f"{event_id}: header {name} sent {value!r}, delivered {headers.get(name.lower())!r}")
            if body != message.body:
                failures.append(f"{event_id}: body bytes changed")
    for failure in failures:
        print(failure)
    print(f"{len(sent)} events sent, {len(by_id)} delivered, {len(failures)} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
