"""Invalidation lag between two hosts: installs an agent through host A,
then reads its details on host B until B shows the new install count, and
prints the time from A's answer to B's first fresh answer (ms) for each
round, one per line.

    python3 bench/lag.py A_URL B_URL TOKEN WORKSPACE_PREFIX ROUNDS [--offset N]

The token's user must be a member of WORKSPACE_PREFIX-(N+1) ...
-(N+ROUNDS), so that every install is new and counts once.
"""
import http.client
import json
import random
import sys
import time
from urllib.parse import urlparse


def connect(url):
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def main():
    a_url, b_url, token, prefix, rounds = sys.argv[1:6]
    offset = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] == "--offset" else 0
    a, b = connect(a_url), connect(b_url)
    for i in range(int(rounds)):
        agent = f"agent-{(i * 37) % 1000:06d}"
        details = f"/api/marketplace/agents/{agent}"
        status, _ = request(b, "GET", details)  # B caches it
        assert status == 200, status
        # Out of step with the relay's 200 ms passes, which a loop of the
        # same period would otherwise always meet at the same phase.
        time.sleep(random.uniform(0, 0.25))
        status, installed = request(
            a,
            "POST",
            f"{details}/install",
            body=json.dumps({"workspaceId": f"{prefix}-{offset + i + 1}"}),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        assert status == 201, (status, installed)
        answered = time.perf_counter()
        count = installed["agent"]["installCount"]
        while True:
            status, seen = request(b, "GET", details)
            if status == 200 and seen["agent"]["installCount"] >= count:
                break
            if time.perf_counter() - answered > 30:
                sys.exit(f"host B never showed install {count} of {agent}")
        print(f"{(time.perf_counter() - answered) * 1000:.3f}")


main()
