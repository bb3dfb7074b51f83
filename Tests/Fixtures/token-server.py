#!/usr/bin/env python3
"""A registry token service (the Docker token authentication spec) for the tests.

token-server.py ADDRESS:PORT KEY.json CERT.pem ISSUER SERVICE HTPASSWD-PAIR

Anyone gets a pull token (as Docker Hub gives anonymous ones), except for repositories under
private/, which need basic auth with USER:PASSWORD. Tokens are RS256 JWTs with the signing
certificate in x5c, signed here with the key's numbers (KEY.json: n and d in hex), so it needs
nothing beyond the standard library.
"""
import base64
import hashlib
import http.server
import json
import sys
import time
import urllib.parse

address, key_file, cert_file, issuer, service, credentials = sys.argv[1:7]
key = json.load(open(key_file))
n, d = int(key["n"], 16), int(key["d"], 16)
der = base64.b64decode("".join(l for l in open(cert_file).read().splitlines() if "CERTIFICATE" not in l))
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(message):
    size = (n.bit_length() + 7) // 8
    digest = SHA256_PREFIX + hashlib.sha256(message).digest()
    padded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
    return pow(int.from_bytes(padded, "big"), d, n).to_bytes(size, "big")


def token(subject, access):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now,
              "jti": str(now) + subject, "access": access}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(sign(signing_input.encode()))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        user = ""
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            given = base64.b64decode(header[6:]).decode()
            if given != credentials:
                return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong user or password"}]})
            user = given.split(":")[0]
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":", 2)
            if name.startswith("private/") and not user:
                return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "private/ needs a login"}]})
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.answer(200, {"token": token(user, access), "expires_in": 300})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


host, port = address.rsplit(":", 1)
http.server.ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
