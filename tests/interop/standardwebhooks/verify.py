"""Verifies Switchyard's signed deliveries with Standard Webhooks' Python reference library.

Usage: verify.py DELIVERIES.json, a file of {"whsec": [secret, ...], "deliveries": [{"headers":
{...}, "body": base64}, ...]}. Every `whsec_` secret must verify every delivery (each signs all
of them), and must refuse the same delivery with one byte of its body changed. Exits non-zero,
saying which, on the first failure.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path):
    with open(path) as file:
        given = json.load(file)
    for secret in given["whsec"]:
        webhook = Webhook(secret)
        for number, delivery in enumerate(given["deliveries"]):
            body = base64.b64decode(delivery["body"])
            webhook.verify(body, delivery["headers"], json_parse=False)
            try:
                webhook.verify(body + b" ", delivery["headers"], json_parse=False)
            except WebhookVerificationError:
                continue
            sys.exit(f"delivery {number}: a changed body verified too")
    print(f"python standardwebhooks verified {len(given['deliveries'])} deliveries")


if __name__ == "__main__":
    main(sys.argv[1])
