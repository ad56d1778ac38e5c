# SPDX-License-Identifier: Apache-2.0
"""The project's bad-request cases, sent to any server over raw sockets, for benchmarks/http_stack.py.

The cases are read from the tests themselves (tests/serve/test_bad_requests.py and test_hostile.py: their
tables and `parametrize` values), so this list follows them. Each case is one HTTP exchange on a fresh
connection (`Connection: close`) with the status the shipped server documents (docs/SERVING.md "Call it").
An answer is judged on what a client can rely on, not on the exact status:

    five_xx      a 5xx answer (a server bug or refusal where the request was the client's fault)
    hang         no complete answer within the timeout, or the connection dropped without one
    non_json     an error answer that is not an OpenAI error object (`{"error": {"message": ...}}`; a HEAD
                 answer has no body, so its Content-Type is checked instead)
    as_expected  the documented status (and `param`, where the test names one)

The model folder must be named `micro` (the tests' model names: `micro`, `micro-0.5`, ...).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests" / "serve"


def _params(fn: Any, name: str) -> list[Any]:
    """The values of `@pytest.mark.parametrize(name, values)` on a test function."""
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == name:
            return list(mark.args[1])
    raise LookupError(f"{fn.__name__}: no parametrize of {name!r}")


def cases() -> list[dict[str, Any]]:
    """Every case: {"name", "method", "path", "body" (bytes or None), "length" (send Content-Length),
    "raw" (a whole request head instead), "status", "param"}."""
    sys.path.insert(0, str(TESTS))
    import test_bad_requests as bad
    import test_hostile as hostile

    def post(name: str, path: str, body: bytes, status: int, param: str | None = None) -> dict[str, Any]:
        return {"name": name, "method": "POST", "path": path, "body": body, "status": status, "param": param}

    out = [post(f"completion: {k}", "/v1/completions", json.dumps(b).encode(), s, p)
           for k, (b, s, p) in bad.BAD_BODIES.items()]
    out += [post(f"chat: {k}", "/v1/chat/completions", json.dumps(b).encode(), s, p)
            for k, (b, s, p) in bad.BAD_CHAT.items()]
    out += [post("malformed JSON", "/v1/completions", b"{not json", 400),
            post("invalid UTF-8", "/v1/completions", b"\xff\xfe", 400),
            {"name": "GET on a POST path", "method": "GET", "path": "/v1/completions", "body": None, "status": 405},
            {"name": "unknown path", "method": "GET", "path": "/v1/nothing", "body": None, "status": 404},
            {"name": "no Content-Length", "raw": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
             b"application/json\r\nConnection: close\r\n\r\n", "status": 411}]  # fmt: skip
    for key, (path, body, param) in hostile.SURROGATES.items():
        out.append(post(f"lone surrogate: {key}", path, hostile.raw_json(body), 400, param))
        out.append(post(f"lone surrogate: {key} (stream)", path, hostile.raw_json({**body, "stream": True}), 400,
                        param))
    depth = 100_000
    for path in ("/v1/completions", "/v1/chat/completions"):
        out.append(post(f"nested {depth} deep array {path}", path, b"[" * depth + b"]" * depth, 400))
        out.append(post(f"nested {depth} deep object {path}", path, b'{"a":' * depth + b"1" + b"}" * depth, 400))
    for method in _params(hostile.test_other_methods_get_a_json_405_or_404, "method"):
        for path in ("/v1/completions", "/health", "/v1/models/micro"):
            out.append({"name": f"{method} {path}", "method": method, "path": path, "body": None, "status": 405})
        out.append({"name": f"{method} /nothing", "method": method, "path": "/nothing", "body": None, "status": 404})
    for path, status in (("/v1/completions", 405), ("/v1/x", 404)):
        out.append({"name": f"HEAD {path}", "method": "HEAD", "path": path, "body": None, "status": status})
    out.append({"name": "unknown method BREW", "raw": b"BREW /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n",
                "status": 501})
    out.append({"name": "broken request line", "raw": b"GET /a b HTTP/1.1\r\n\r\n", "status": 400})
    for name in _params(hostile.test_model_names_are_parsed_strictly, "name"):
        out.append(post(f"loose model name {name!r}", "/v1/completions",
                        json.dumps({**hostile.OK, "model": name}).encode(), 404, "model"))
    return out


def exchange(addr: tuple[str, int], data: bytes, timeout: float) -> tuple[int | None, dict[str, str], bytes]:
    """Send `data`, read to EOF -> (status, headers lower-cased, body de-chunked); status None: no answer."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        raw, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            raw += piece
        else:
            return None, {}, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return None, {}, raw
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while body:
            size, _, body = body.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            out, body = out + body[:n], body[n + 2 :]
            if n == 0:
                break
        body = out
    return int(lines[0].split()[1]), headers, body


def run_case(addr: tuple[str, int], case: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """One case -> {"name", "status", "expected", "five_xx", "hang", "non_json", "as_expected"}."""
    if "raw" in case:
        data = case["raw"]
    else:
        body = case["body"] or b""
        head = f"{case['method']} {case['path']} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if case["body"] is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + body
    start = time.monotonic()
    try:
        status, headers, body = exchange(addr, data, timeout)
    except OSError:
        status, headers, body = None, {}, b""
    out = {"name": case["name"], "status": status, "expected": case["status"], "seconds": time.monotonic() - start}
    out["hang"] = status is None
    out["five_xx"] = status is not None and status >= 500 and case["status"] < 500
    parsed: Any = None
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    error_object = (isinstance(parsed, dict) and set(parsed) == {"error"} and isinstance(parsed["error"], dict)
                    and isinstance(parsed["error"].get("message"), str) and bool(parsed["error"]["message"]))
    if case.get("method") == "HEAD":
        error_object = body == b"" and headers.get("content-type", "").startswith("application/json")
    out["non_json"] = status is not None and status >= 400 and not error_object
    param_ok = case.get("param") is None or (error_object and parsed["error"].get("param") == case["param"])
    out["as_expected"] = status == case["status"] and error_object and param_ok
    if not out["as_expected"]:
        out["body"] = body[:160].decode("utf-8", "replace")
    return out


def run_suite(url: str, ok_body: dict[str, Any]) -> dict[str, Any]:
    """Every case against `url`, then one good request (the server must still serve) -> the tally."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    addr = (host, int(port))
    results = [run_case(addr, case) for case in cases()]
    data = json.dumps(ok_body).encode()
    good = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    status = exchange(addr, good, 30.0)[0]
    return {
        "cases": len(results),
        "as_expected": sum(r["as_expected"] for r in results),
        "five_xx": sum(r["five_xx"] for r in results),
        "hangs": sum(r["hang"] for r in results),
        "non_json_errors": sum(r["non_json"] for r in results),
        "serves_after": status == 200,
        "seconds": sum(r["seconds"] for r in results),
        "differences": [{k: r[k] for k in ("name", "status", "expected", "body") if k in r}
                        for r in results if not r["as_expected"]],
    }
