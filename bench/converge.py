#!/usr/bin/env python3
"""Convergence between two hosts, for bench/converge.sh: deploys the two
files alternately through host A's admin API and measures how long after
A's answer host B's admin list shows the new digest as what B serves
(`current`), polling every 2 ms. Prints one time in milliseconds per
round.

    python3 bench/converge.py A_URL B_URL TOKEN COMPONENT FILE1 FILE2 ROUNDS
"""
import hashlib
import json
import sys
import time
import urllib.request


def call(method, url, token, body=None):
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def serving(base, token, component):
    listed = call("GET", f"{base}/admin/components", token)
    for c in listed["components"]:
        if c["name"] == component:
            return c["current"]["digest"]
    raise SystemExit(f"no component {component}")


def main():
    a, b, token, component, first, second, rounds = sys.argv[1:8]
    files = [open(first, "rb").read(), open(second, "rb").read()]
    for i in range(int(rounds)):
        body = files[i % 2]
        digest = hashlib.sha256(body).hexdigest()
        call("PUT", f"{a}/admin/components/{component}", token, body)
        answered = time.monotonic()
        while serving(b, token, component) != digest:
            if time.monotonic() - answered > 30:
                raise SystemExit("B never served the deployed version")
            time.sleep(0.002)
        print(f"{(time.monotonic() - answered) * 1000:.2f}", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
