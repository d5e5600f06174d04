#!/usr/bin/env python3
"""A short, mixed load through the caching proxy, so that every dashboard panel and
recording rule has data to show: password logins (right and wrong), TOTP logins (right
and wrong codes), session and forward-auth lookups (misses, then hits, and bursts on one
fresh key that single-flight coalesces), user lookups, tokens of all three grants and
their introspection, forged and malformed tokens (Bloom rejections), and logouts
(cache invalidations).

    QUANTAID_URL=http://127.0.0.1:8080 QUANTAID_BOOTSTRAP_ADMIN_TOKEN=... load.py SECONDS

Secrets come from the environment, never the command line. Every request is bounded by a
timeout and the whole run by SECONDS; a request that fails at the network level (while
Redis restarts, say) is counted, not fatal, since the point is the metrics it leaves.
Exits 1 if setup fails or nothing succeeded.
"""
import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

URL = os.environ["QUANTAID_URL"].rstrip("/")
ADMIN = os.environ["QUANTAID_BOOTSTRAP_ADMIN_TOKEN"]
PASSWORD = "obs-" + secrets.token_urlsafe(12)
TIMEOUT = 10


def call(method, path, body=None, bearer=None, form=None, basic=None):
    """(status, parsed JSON body or None); status 0 when the request did not complete."""
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    if basic:
        headers["authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    req = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def totp(secret_b32: str, at: float) -> str:
    """RFC 6238 code (SHA-1, 6 digits, 30 s), as the backend computes it."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def forged_token(prefix: str, age_s: int) -> str:
    """A well-formed token (docs/token-format.md) stamped `age_s` ago that was never
    issued: old enough for the proxy's Bloom filter to call it absent."""
    millis = int((time.time() - age_s) * 1000)
    payload = millis.to_bytes(8, "big")[2:] + secrets.token_bytes(24)
    crc = zlib.crc32(prefix.encode() + payload).to_bytes(4, "big")
    return prefix + "_" + base64.urlsafe_b64encode(payload + crc).decode().rstrip("=")


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_status = {}

    def add(self, status):
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1


COUNTS = Counts()


class Budget:
    """A fixed number of deliberate failures: every request here comes from one IP, and
    the backend's per-IP login throttle (50 failures per window by default) would
    otherwise lock out the TOTP logins the MFA panels need."""

    def __init__(self, n):
        self.lock = threading.Lock()
        self.left = n

    def take(self):
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


WRONG_PASSWORDS = Budget(20)


def counted(*args, **kwargs):
    status, body = call(*args, **kwargs)
    COUNTS.add(status)
    return status, body


def setup():
    users = []
    for i in range(12):
        name = f"obs{secrets.token_hex(4)}{i}"
        status, body = call("POST", "/v1/users", {"username": name, "email": f"{name}@example.com", "password": PASSWORD}, bearer=ADMIN)
        if status != 201:
            sys.exit(f"load: creating a user failed: {status} {body}")
        users.append((name, body["id"]))
    status, client = call("POST", "/v1/clients", {
        "name": "observability test",
        "grant_types": ["client_credentials", "password", "refresh_token"],
        "scopes": ["read"],
    }, bearer=ADMIN)
    if status not in (200, 201):
        sys.exit(f"load: creating a client failed: {status} {client}")
    client = (client["client_id"], client["client_secret"])
    # Three users log in with TOTP: enrol right after a password login.
    mfa_users = []
    for name, user_id in users[:3]:
        _, session = call("POST", "/v1/auth/login", {"username": name, "password": PASSWORD})
        status, enrol = call("POST", f"/v1/users/{user_id}/mfa/totp", {}, bearer=session["session_token"])
        if status != 200:
            sys.exit(f"load: TOTP enrolment failed: {status} {enrol}")
        status, body = call("POST", f"/v1/users/{user_id}/mfa/totp/confirm", {"code": totp(enrol["secret"], time.time())},
                            bearer=session["session_token"])
        if status not in (200, 204):
            sys.exit(f"load: TOTP confirmation failed: {status} {body}")
        mfa_users.append({"name": name, "secret": enrol["secret"], "step": int(time.time()) // 30})
    return users[3:], mfa_users, client


def session_traffic(users, i):
    name, user_id = users[i % len(users)]
    status, body = counted("POST", "/v1/auth/login", {"username": name, "password": PASSWORD})
    if status != 200:
        return
    session = body["session_token"]
    for _ in range(4):  # a miss, then hits
        counted("GET", "/v1/auth/session", bearer=session)
    counted("GET", "/v1/auth/check", bearer=session)
    for _ in range(2):
        counted("GET", f"/v1/users/{user_id}", bearer=ADMIN)
    if i % 3 == 0:
        counted("POST", "/v1/auth/logout", bearer=session)
    if i % 10 == 0 and WRONG_PASSWORDS.take():  # a few, well below the per-IP throttle
        counted("POST", "/v1/auth/login", {"username": name, "password": "not the password"})


def token_traffic(client, users, i):
    status, body = counted("POST", "/oauth/token", form={"grant_type": "client_credentials"}, basic=client)
    if status == 200:
        for _ in range(3):
            counted("POST", "/oauth/introspect", form={"token": body["access_token"]}, basic=client)
    name, _ = users[i % len(users)]
    status, body = counted("POST", "/oauth/token", form={"grant_type": "password", "username": name, "password": PASSWORD, "scope": "read"},
                           basic=client)
    if status == 200 and body.get("refresh_token"):
        counted("POST", "/oauth/token", form={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, basic=client)
    # Never issued: "absent" from the Bloom filter, or rejected as malformed.
    counted("POST", "/oauth/introspect", form={"token": forged_token("qat", 600)}, basic=client)
    counted("GET", "/v1/auth/session", bearer=forged_token("qst", 600))
    counted("GET", "/v1/auth/session", bearer="qst_not-a-token")


def coalesced_burst(users, i):
    """Eight concurrent lookups of one session nobody has looked up yet."""
    name, _ = users[i % len(users)]
    status, body = counted("POST", "/v1/auth/login", {"username": name, "password": PASSWORD})
    if status != 200:
        return
    threads = [threading.Thread(target=counted, args=("GET", "/v1/auth/session"), kwargs={"bearer": body["session_token"]}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def mfa_traffic(mfa_users):
    """Each TOTP user logs in once per 30 s step (a code is single-use): one wrong code,
    then the right one."""
    now = time.time()
    for u in mfa_users:
        if int(now) // 30 <= u["step"]:
            continue
        status, body = counted("POST", "/v1/auth/login", {"username": u["name"], "password": PASSWORD})
        if status != 200 or not body.get("mfa_token"):
            continue
        right = totp(u["secret"], now)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        counted("POST", "/v1/auth/mfa/verify", {"mfa_token": body["mfa_token"], "code": wrong})
        status, _ = counted("POST", "/v1/auth/mfa/verify", {"mfa_token": body["mfa_token"], "code": right})
        if status == 200:
            u["step"] = int(now) // 30


def worker(kind, deadline, users, mfa_users, client):
    i = 0
    while time.time() < deadline:
        if kind == "sessions":
            session_traffic(users, i)
        elif kind == "tokens":
            token_traffic(client, users, i)
        elif kind == "bursts":
            coalesced_burst(users, i)
            time.sleep(0.5)
        elif kind == "mfa":
            mfa_traffic(mfa_users)
            time.sleep(1)
        i += 1


def main():
    seconds = float(sys.argv[1])
    users, mfa_users, client = setup()
    deadline = time.time() + seconds
    kinds = ["sessions", "sessions", "tokens", "bursts", "mfa"]
    threads = [threading.Thread(target=worker, args=(k, deadline, users, mfa_users, client)) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(COUNTS.by_status.items()))
    print(f"load: {sum(COUNTS.by_status.values())} requests in {seconds:.0f} s ({summary})")
    return 0 if COUNTS.by_status.get(200) else 1


if __name__ == "__main__":
    sys.exit(main())
