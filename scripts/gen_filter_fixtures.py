#!/usr/bin/env python3
"""Generate the filter differential-test fixture from mitmproxy itself.

Run with the Python of a venv that has mitmproxy 12.3.1 installed (scripts/peers.sh
installs one; it exports WAYLAY_MITMPROXY_PY):

    "$WAYLAY_MITMPROXY_PY" scripts/gen_filter_fixtures.py [--out PATH]

It reads the flow descriptions in crates/core/tests/data/filter_flows.json, builds the same
flows with mitmproxy's classes, evaluates every expression of the corpus below (hand-written
ones, then random ones from a fixed seed) with mitmproxy.flowfilter, and writes
crates/core/tests/data/filter_corpus.json: per expression, whether mitmproxy accepts it and
its answer for each flow ("1"/"0", in flow order). crates/core/tests/filter_corpus.rs builds
the flows from the same description and requires waylay to agree on every pair, except the
known divergences listed here (DECODED_TWINS, UNSUPPORTED_REGEX_OPCODES), where the
fixture records waylay's expected answer and the reason.
"""

import json
import random
import re
import sys
from pathlib import Path

from mitmproxy import connection, flow, flowfilter, http, tcp, websocket
from mitmproxy.net import encoding as mencoding
from wsproto.frame_protocol import Opcode

try:
    from re import _constants as sre_constants, _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants, sre_parse  # type: ignore

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates" / "core" / "tests" / "data"

# Python regex features the `regex` crate (and so waylay) does not have. An expression
# whose regex uses one is accepted by mitmproxy and refused by waylay with a message
# naming the feature; the fixture records it as a divergence.
UNSUPPORTED_REGEX_OPCODES = {
    sre_constants.ASSERT: "look-around",
    sre_constants.ASSERT_NOT: "look-around",
    sre_constants.GROUPREF: "backreference",
    sre_constants.GROUPREF_EXISTS: "conditional group",
    sre_constants.ATOMIC_GROUP: "atomic group",
    sre_constants.POSSESSIVE_REPEAT: "possessive quantifier",
}

# Flows where waylay answers differently from mitmproxy on purpose, and why. For these,
# waylay's expected answer is mitmproxy's answer on a twin of the flow whose raw body is
# already decoded (with the same headers, so mitmproxy's decoding fails and it matches
# the raw bytes: the decoded ones).
DECODED_TWINS: dict[str, str] = {
    # `Content-Encoding: gzip, br` (a chain RFC 9110 allows): mitmproxy only undoes a
    # single coding and falls back to the still-encoded bytes; waylay undoes the chain.
    "chained-encoding": "waylay decodes a chained Content-Encoding; mitmproxy matches the encoded bytes",
}


def body_bytes(d: dict) -> bytes:
    if "body_hex" in d:
        return bytes.fromhex(d["body_hex"])
    return d.get("body", "").encode()


def encode(data: bytes, enc: str | None) -> bytes:
    """Encodes with each coding of a `Content-Encoding` value, in order."""
    if enc is None:
        return data
    for e in enc.split(","):
        data = mencoding.encode(data, e.strip())
    return data


def addr(s: str) -> tuple[str, int]:
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def headers(pairs) -> http.Headers:
    return http.Headers([(n.encode(), v.encode()) for n, v in pairs])


def build(d: dict, decoded: bool = False):
    client = connection.Client(
        peername=addr(d["client"]), sockname=("127.0.0.1", 8080), timestamp_start=1.0
    )
    server = connection.Server(address=tuple(d["server"]) if d["server"] else None)
    if d["type"] == "tcp":
        f = tcp.TCPFlow(client, server)
        for m in d["messages"]:
            content = bytes.fromhex(m["hex"]) if "hex" in m else m["text"].encode()
            f.messages.append(tcp.TCPMessage(m["from_client"], content))
    else:
        f = http.HTTPFlow(client, server)
        r = d["request"]
        f.request = http.Request(
            host=r["host"],
            port=r["port"],
            method=r["method"].encode(),
            scheme=r["scheme"].encode(),
            authority=r.get("authority", "").encode(),
            path=r["path"].encode(),
            http_version=r.get("http_version", "HTTP/1.1").encode(),
            headers=headers(r["headers"]),
            content=None,
            trailers=None,
            timestamp_start=1.0,
            timestamp_end=2.0,
        )
        f.request.raw_content = body_bytes(r) if decoded else encode(body_bytes(r), r.get("encoding"))
        if "response" in d:
            s = d["response"]
            f.response = http.Response(
                http_version=s.get("http_version", "HTTP/1.1").encode(),
                status_code=s["status"],
                reason=b"",
                headers=headers(s["headers"]),
                content=None,
                trailers=None,
                timestamp_start=3.0,
                timestamp_end=4.0,
            )
            f.response.raw_content = body_bytes(s) if decoded else encode(body_bytes(s), s.get("encoding"))
        if "websocket" in d:
            f.websocket = websocket.WebSocketData()
            for m in d["websocket"]:
                if "hex" in m:
                    msg = websocket.WebSocketMessage(Opcode.BINARY, m["from_client"], bytes.fromhex(m["hex"]))
                else:
                    msg = websocket.WebSocketMessage(Opcode.TEXT, m["from_client"], m["text"].encode())
                f.websocket.messages.append(msg)
        f.is_replay = d.get("is_replay")
    if d.get("error"):
        f.error = flow.Error(d["error"])
    f.marked = d.get("marked", "")
    f.comment = d.get("comment", "")
    f.metadata = d.get("metadata", {})
    return f


HAND = r"""
~all
~http
~tcp
~websocket
~dns
~udp
!~dns
~q
~s
~e
~a
~marked
~replay
~replayq
~replays
~c 200
~c 404
~c 0200
~c 99999999999999999999
~c 500 | ~c 401
~d example.com
~d EXAMPLE
~d ^example\.com$
~d other.example.org
~d 10.0.0.1
~d h2.example
~d bücher
~d "bad host"
~d ::1
~u /index.html
~u ^http://example\.com/index
~u https://api.example.com:8443/
~u http://other.example.org:8080/status
~u secure.example.com:443
~u \*
~u http://\[?::1
~u http://example.com$
~u ^http://example.com$
~u :9000/api
~u café
~u caf%C3%A9
~u "bad host"
index
example.com
"hello world"
'single quoted'
~m GET
~m ^post$
~m patch
~m connect
~h User-Agent
~h "^host: example"
~h "x-dup: two"
~h "one\r\nX-Dup"
~h ^cookie:.*b=2$
~hq Authorization
~hs nginx
~hs ^server
~hq ^$
~h ""
~t json
~t text/html
~tq json
~ts json
~ts ^text/plain$
~t javascript
~b Hello
~b "hello world"
~b unauthorized
~b console\.log
~b "compressed request"
~b "not really"
~b "line1.line2"
~b line2$
~b ^line3
~b PNG
~b \x89PNG
~b "binary"
~b "\x00"
~b [\x80-\xff]
~b ünïcödé
~b "tab"
~bq alice
~bq hello
~bs hello
~bs "hello client"
~bq "SELECT"
~bs "row"
~b "item seven"
~bq "item seven"
~bs "not found"
~src 127.0.0.1
~src ^10\.1\.2\.3:51234$
~src 192.168
~src ::1
~src :5000
~dst example.com:80
~dst db.internal
~dst ^::1:8080$
~dst 443
~meta tag
~meta "tag: auth"
~meta "^n: 3$"
~meta "ratio: 0.5"
~meta "big: 1e\+20"
~meta "ok: True"
~meta "none: None"
~meta "list: \[1, "
~meta "obj: \{'a': 'x', 'b': 1\}"
~meta kind
~meta "\"a'b\""
~marker star
~marker :
~marker 🔥
~marker ^x$
~marker .
~comment attempt
~comment ^second
~comment line$
~comment db
~q & ~e
~s & !~e
!~s
~d example.com & ~c 200
~d example.com ~c 200
~d example.com | ~tcp
~tcp | ~websocket & ~bs binary
(~tcp | ~websocket) & ~bs binary
!(~q | ~tcp)
!!~q
~q ~s | ~e
~c 200 & (~t html | ~t css)
~a & ~c 200
~http & !~a
~replay & ~c 204
~replays | ~replayq
~d "api\.example\.com" & ~m POST & ~hq "content-type: application/json"
(~q)
~q&~s
~q|~s
a &
!
(a b)
a)
((a
~d
~d ~q
~c
~c abc
~c -1
~x
~
""
''
'"'
"'"
"a\"b"
'a\'b'
~d "\d+"
~d '\\d+'
~d "a\tb"
~d "\x412"
~d "\xA2"
~d "\03"
~d "\05"
~d "\uA4"
~d "\1234"
~d "\0"
~d "a	b"
~u [
~u (
~u )x
~u a{
~u a{2}
~u a{,2}
~u a{2,1}
~u {1}
~u x{}
~u a**
~u a*?
~u a*+
~u ^*
~u \A*
~u (?i)abc
~u a(?i)
~u (?x) e x a m p l e
~u (?#comment)example
~u (?P<n>ex)ample
~u (?P<1n>ex)
~u (?P=n)
~u (?<n>x)
~u (?:ex)ample
~u (?i:EX)ample
~u (?-i:EX)ample
~u (?-i:ex)ample
~u (?s:.)
~u (?L)x
~u (?a)\w
~u (?u)\w
~u (?au)x
~u \d\w\s\b\B\A\Z
~u \Z
~u \z
~u \p{L}
~u \<
~u [[:alpha:]]
~u [a&&b]
~u [a--b]
~u [\d-z]
~u [z-a]
~u []
~u [^]
~u []a]
~u [^]a]
~u [a-]
~u [\w]+
~u [\b]
~u [\A]
~u \q
~u \_
~u \8
~u \1
~u (a)\2
~u \01
~u \101
~u \400
~u \x4
~u \x41
~u \u0041
~u \U00000041
~u \U00110000
~u "\\N{DIGIT ONE}"
~d "a(?=b)"
~b "(a)\\1"
~u "(a)(?(1)b|c)"
~u "(?>a)"
~b "chained payload"
~bq "chained payload"
~b "\\xfa"
~b \u0041
~b (?u)x
~b (?L)x
~u é+
~b é+
~u .
~u x|
~u |
~u (|)
~u ((((((((((x))))))))))
~u \
~u a\
""".strip("\n").split("\n")

# Tokens for random expressions (including broken ones).
OPS = ["~q", "~s", "~e", "~all", "~http", "~tcp", "~websocket", "~a", "~marked", "~replay"]
REX_OPS = ["~d", "~u", "~m", "~h", "~hq", "~hs", "~b", "~bq", "~bs", "~t", "~tq", "~ts",
           "~src", "~dst", "~meta", "~marker", "~comment"]
WORDS = ["example", "example.com", "com$", "^http", "GET", "post", "json", "text", "hello",
         "[a-z]+", "\\d+", "x|y", "a&b", "!x", "é", ".*", "\\.", "2", "200", "1", "::1",
         "star", "auth", "[", "a{", "(?i)", "\\", "{1}", "*", "a**", "\\Z", "$"]
QUOTED = ['"hello world"', "'a b'", '"x\\"y"', '"\\d"', "'\\\\d'", '"\\t"', '""', '"(a|b)"',
          '"unterminated', "'\\x412'"]
OTHER = ["!", "&", "|", "(", ")", "~c 200", "~c 404", "~c", "~x", "~", "~d", "!!"]


def random_expr(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 7)):
        k = rng.random()
        if k < 0.25:
            parts.append(rng.choice(OPS))
        elif k < 0.55:
            parts.append(rng.choice(REX_OPS) + rng.choice([" ", "  ", ""]) + rng.choice(WORDS + QUOTED))
        elif k < 0.7:
            parts.append(rng.choice(WORDS + QUOTED))
        else:
            parts.append(rng.choice(OTHER))
    out = parts[0]
    for p in parts[1:]:
        out += rng.choice([" ", " ", " ", "", "\t", "  "]) + p
    return out


REGEX_ALPHABET = list("ab.*+?{}[]()^$|\\dws1,-:=!<>P#imx09 ") + ["é"]


def random_regex(rng: random.Random) -> str:
    return "".join(rng.choice(REGEX_ALPHABET) for _ in range(rng.randint(1, 8)))


def gen_regex(rng: random.Random, depth: int = 0) -> str:
    """A random, mostly valid, Python regex from a small grammar."""
    atoms = ["a", "b", "A", "é", "\\n", "\\.", ".", "-", " ", "[a-c]", "[^a]", "[é\\d]",
             "\\d", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B", "^", "$", "\\A", "\\Z",
             "\\x41", "{", "}", "]", "[[:a]]", "\\t", "[\\]a]", "[a-]", "\\-"]
    out = ""
    for _ in range(rng.randint(1, 4)):
        k = rng.random()
        if k < 0.6 or depth > 2:
            item = rng.choice(atoms)
        elif k < 0.7:
            item = "(" + gen_regex(rng, depth + 1) + ")"
        elif k < 0.8:
            item = "(?:" + gen_regex(rng, depth + 1) + "|" + gen_regex(rng, depth + 1) + ")"
        elif k < 0.87:
            item = "(?" + rng.choice(["i", "-i", "s", "m", "x", "a"]) + ":" + gen_regex(rng, depth + 1) + ")"
        else:
            item = rng.choice(["a", "b", "é"]) + "|" + gen_regex(rng, depth + 1)
        if rng.random() < 0.3 and item not in ("^", "$", "\\A", "\\Z", "\\b", "\\B"):
            item += rng.choice(["*", "+", "?", "{2}", "{1,2}", "{,2}", "{2,}", "*?", "+?", "??"])
        out += item
    if depth == 0 and rng.random() < 0.1:
        out = rng.choice(["(?i)", "(?s)", "(?m)", "(?x)", "(?a)"]) + out
    return out


SUBJECT_ALPHABET = ["a", "b", "A", "B", "c", "é", "É", "\n", " ", ".", "-", "1", "_", "{", "]", ":"]


def quote(s: str) -> str:
    """A filter-language quoted string whose content unquotes to `s`."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"'


def regex_cases(rng: random.Random, n: int) -> list[dict]:
    """Regex semantics: each regex on a few subjects, as `~comment` (text, multiline) and as
    `~bq` (bytes, dotall) on a flow whose comment and request body are the subject."""
    client = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 8080), timestamp_start=1.0)
    cases = []
    for _ in range(n):
        rx = gen_regex(rng)
        subjects = ["".join(rng.choice(SUBJECT_ALPHABET) for _ in range(rng.randint(0, 6))) for _ in range(6)]
        rec: dict = {"regex": rx, "subjects": subjects}
        for op in ["~comment", "~bq"]:
            try:
                flt = flowfilter.parse(f"{op} {quote(rx)}")
            except ValueError:
                rec[op] = None
                continue
            feature = regex_feature(flt)
            if feature:
                rec[op] = None
                rec["divergence"] = f"waylay refuses a regex with a {feature}"
                continue
            answers = ""
            for subj in subjects:
                f = http.HTTPFlow(client, connection.Server(address=None))
                f.request = http.Request.make("GET", "http://example.com/", subj.encode())
                f.comment = subj
                answers += "1" if flt(f) else "0"
            rec[op] = answers
        cases.append(rec)
    return cases


def unsupported(pattern: str, flags: int, as_bytes: bool) -> str | None:
    """The unsupported feature a valid Python pattern uses, if any."""
    try:
        parsed = sre_parse.parse(pattern.encode() if as_bytes else pattern, flags)
    except Exception:
        return None

    def walk(items):
        for op, av in items:
            if op in UNSUPPORTED_REGEX_OPCODES:
                return UNSUPPORTED_REGEX_OPCODES[op]
            for a in av if isinstance(av, (list, tuple)) else [av]:
                if isinstance(a, sre_parse.SubPattern):
                    r = walk(a)
                    if r:
                        return r
                elif isinstance(a, (list, tuple)):
                    for b in a:
                        if isinstance(b, sre_parse.SubPattern):
                            r = walk(b)
                            if r:
                                return r
        return None

    return walk(parsed)


def regex_feature(flt) -> str | None:
    """Walks a parsed mitmproxy filter for a regex waylay cannot run."""
    if isinstance(flt, (flowfilter.FAnd, flowfilter.FOr)):
        for x in flt.lst:
            r = regex_feature(x)
            if r:
                return r
        return None
    if isinstance(flt, flowfilter.FNot):
        return regex_feature(flt.itm)
    if isinstance(flt, flowfilter._Rex):
        as_bytes = isinstance(flt, flowfilter._BinRex)
        if "\\N" in flt.expr and not as_bytes:
            return "named Unicode escape"
        return unsupported(flt.expr, flt.re.flags & ~re.UNICODE, as_bytes)
    return None


def main() -> None:
    desc = json.loads((DATA / "filter_flows.json").read_text())
    flows = [build(d) for d in desc["flows"]]
    names = [d["name"] for d in desc["flows"]]
    twins = {names.index(n): (build(desc["flows"][names.index(n)], decoded=True), why)
             for n, why in DECODED_TWINS.items()}
    rng = random.Random(20261130)
    exprs = list(HAND)
    exprs += [random_expr(rng) for _ in range(1500)]
    for op in ["~u", "~b", "~h", "~d", "~meta"]:
        exprs += [f"{op} '{random_regex(rng)}'" for _ in range(150)]
        exprs += [f"{op} {random_regex(rng)}" for _ in range(50)]
    seen = set()
    out = []
    for e in exprs:
        if e in seen:
            continue
        seen.add(e)
        rec: dict = {"expr": e}
        try:
            flt = flowfilter.parse(e)
        except ValueError:
            flt = None
        rec["ok"] = flt is not None
        if flt is not None:
            rec["results"] = "".join("1" if flt(f) else "0" for f in flows)
            feature = regex_feature(flt)
            if feature:
                rec["divergence"] = f"waylay refuses a regex with a {feature}"
                rec["waylay_ok"] = False
        if flt is not None and "divergence" not in rec:
            results = list(rec["results"])
            for idx, (twin, why) in twins.items():
                answer = "1" if flt(twin) else "0"
                if answer != results[idx]:
                    results[idx] = answer
                    rec["divergence"] = why
            if "divergence" in rec:
                rec["waylay_results"] = "".join(results)
        out.append(rec)
    corpus = {
        "generated_by": "scripts/gen_filter_fixtures.py",
        "regex_cases": regex_cases(random.Random(7), 1500),
        "mitmproxy": __import__("mitmproxy.version").version.VERSION,
        "flows": [d["name"] for d in desc["flows"]],
        "expressions": out,
    }
    # One record per line: small, and a regenerated fixture diffs line by line.
    def dump(v) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    lines = []
    for key, value in corpus.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{dump(key)}:[\n" + ",\n".join(dump(x) for x in value) + "\n]")
        else:
            lines.append(f"{dump(key)}:{dump(value)}")
    text = "{\n" + ",\n".join(lines) + "\n}"
    out_path = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else DATA / "filter_corpus.json"
    out_path.write_text(text + "\n")
    n_ok = sum(1 for r in out if r["ok"])
    print(f"{len(out)} expressions ({n_ok} accepted by mitmproxy) x {len(flows)} flows", file=sys.stderr)


if __name__ == "__main__":
    main()
