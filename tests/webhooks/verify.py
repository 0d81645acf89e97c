"""Verifies one real webhook delivery with the maintained Standard Webhooks library (PyPI `standardwebhooks`), the
way a vendor's receiver would: `verify.py SECRET HEADERS_JSON BODY_FILE` prints the verified payload's id and type
and exits 0; a signature that does not verify raises (exit 1). Exit 3 when the library is not installed.

Used by tests/tests/webhooks.rs (`python_standardwebhooks_verifies_a_real_delivery`); .ci/run installs the library.
"""
import json
import sys

try:
    from standardwebhooks.webhooks import Webhook
except ImportError as e:  # pragma: no cover - reported to the test
    print(f"standardwebhooks is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    secret, headers_path, body_path = sys.argv[1:4]
    with open(headers_path, encoding="utf-8") as f:
        headers = json.load(f)
    with open(body_path, "rb") as f:
        body = f.read()
    payload = Webhook(secret).verify(body, headers)
    print(f"verified {payload['id']} {payload['type']}")
    # A tampered body must not verify.
    try:
        Webhook(secret).verify(body + b" ", headers)
    except Exception:  # the library raises WebhookVerificationError
        print("tampered body refused")
    else:
        print("a tampered body verified", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
