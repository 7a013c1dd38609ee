# waylay's `mitmproxy` package for addon scripts: the names a mitmproxy addon script
# imports, implemented over waylay's flows (the `_waylay.Core` accessors). Written for
# waylay; behaviour follows mitmproxy's documented API.
import asyncio
import codecs
import copy
import enum
import functools
import inspect
import json as _json
import logging
import os
import re
import sys
import threading
import time as _time
import traceback
import types
import typing
import urllib.parse

import _waylay

Core = _waylay.Core


def _module(name, doc=""):
    m = types.ModuleType(name, doc)
    m.__path__ = []  # a package, so `import mitmproxy.x` asks our finder
    sys.modules[name] = m
    return m


mitmproxy = _module("mitmproxy", "waylay's mitmproxy API for addon scripts")


def _export(mod, *objs, **named):
    for o in objs:
        setattr(mod, o.__name__, o)
        try:
            o.__module__ = mod.__name__
        except (AttributeError, TypeError):
            pass
    for k, v in named.items():
        setattr(mod, k, v)


# ---------------------------------------------------------------- multidicts


def _s(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return str(v)


def _b(v):
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    return bytes(v)


class _MultiDictBase:
    """A dict-like view of ordered (key, value) fields, duplicates kept."""

    def _fields(self):
        raise NotImplementedError

    def _set_fields(self, fields):
        raise NotImplementedError

    @staticmethod
    def _kconv(k):
        return k

    def get_all(self, key):
        k = self._kconv(key)
        return [v for (n, v) in self._fields() if self._kconv(n) == k]

    def set_all(self, key, values):
        k = self._kconv(key)
        values = list(values)
        out = []
        for n, v in self._fields():
            if self._kconv(n) == k:
                if values:
                    out.append((n, values.pop(0)))
            else:
                out.append((n, v))
        for v in values:
            out.append((key, v))
        self._set_fields(out)

    def add(self, key, value):
        self._set_fields(list(self._fields()) + [(key, value)])

    def insert(self, index, key, value):
        f = list(self._fields())
        f.insert(index, (key, value))
        self._set_fields(f)

    def __getitem__(self, key):
        vals = self.get_all(key)
        if not vals:
            raise KeyError(key)
        return vals[0]

    def __setitem__(self, key, value):
        self.set_all(key, [value])

    def __delitem__(self, key):
        k = self._kconv(key)
        f = [(n, v) for (n, v) in self._fields() if self._kconv(n) != k]
        if len(f) == len(self._fields()):
            raise KeyError(key)
        self._set_fields(f)

    def __contains__(self, key):
        k = self._kconv(key)
        return any(self._kconv(n) == k for n, _ in self._fields())

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self):
        seen = set()
        for n, _ in self._fields():
            k = self._kconv(n)
            if k not in seen:
                seen.add(k)
                yield n

    def __len__(self):
        return len({self._kconv(n) for n, _ in self._fields()})

    def keys(self, multi=False):
        return [n for n, _ in self._fields()] if multi else list(self)

    def values(self, multi=False):
        return [v for _, v in self.items(multi)]

    def items(self, multi=False):
        if multi:
            return list(self._fields())
        return [(k, self[k]) for k in self]

    def pop(self, key, *default):
        try:
            v = self[key]
        except KeyError:
            if default:
                return default[0]
            raise
        del self[key]
        return v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, other=(), **kw):
        items = other.items() if hasattr(other, "items") else other
        for k, v in list(items) + list(kw.items()):
            self[k] = v

    def clear(self):
        self._set_fields([])

    @property
    def fields(self):
        return tuple(self._fields())

    @fields.setter
    def fields(self, value):
        self._set_fields(list(value))

    def __eq__(self, other):
        if isinstance(other, _MultiDictBase):
            return self.fields == other.fields
        return False

    def __repr__(self):
        return f"{type(self).__name__}[{', '.join(f'({k!r}, {v!r})' for k, v in self._fields())}]"

    def to_dict(self):
        return {k: (self.get_all(k) if len(self.get_all(k)) > 1 else self[k]) for k in self}


class MultiDict(_MultiDictBase):
    def __init__(self, fields=()):
        self._f = [tuple(x) for x in fields]

    def _fields(self):
        return self._f

    def _set_fields(self, fields):
        self._f = [tuple(x) for x in fields]

    def copy(self):
        return MultiDict(self._f)


class MultiDictView(_MultiDictBase):
    """A live view: reads with `getter`, writes the whole field list back with `setter`."""

    def __init__(self, getter, setter):
        self._getter = getter
        self._setter = setter

    def _fields(self):
        return list(self._getter())

    def _set_fields(self, fields):
        self._setter(list(fields))

    def copy(self):
        return MultiDict(self._fields())


class Headers(_MultiDictBase):
    """HTTP headers: ordered, case-insensitive, duplicates kept; values are str."""

    # No `__slots__`: a slot would clash with the native base of `_FlowHeaders` (one
    # instance layout per class).

    def __init__(self, fields=(), **headers):
        f = [(_b(k), _b(v)) for k, v in fields]
        for k, v in headers.items():
            f.append((_b(k.replace("_", "-")), _b(v)))
        self._f = f

    @staticmethod
    def _kconv(k):
        return k.lower()

    def _raw(self):
        return self._f

    def _set_raw(self, fields):
        self._f = [(_b(k), _b(v)) for k, v in fields]

    def _fields(self):
        return [(_s(k), _s(v)) for k, v in self._raw()]

    def _set_fields(self, fields):
        self._set_raw(fields)

    @property
    def fields(self):
        return tuple(self._raw())

    @fields.setter
    def fields(self, value):
        self._set_raw(list(value))

    def __bytes__(self):
        return b"".join(k + b": " + v + b"\r\n" for k, v in self._raw())

    def copy(self):
        return Headers(self._raw())


class _FlowHeaders(_waylay.HeadersView, Headers):
    """The headers of a request/response inside waylay: every operation goes to Rust; the
    common ones (`h[k]`, `h[k] = v`, `del h[k]`, `k in h`, `get`, `get_all`, `add`) are the
    native base's, without a Python frame."""

    __slots__ = ()

    def __init__(self, core, side):
        pass

    def _raw(self):
        return self._c.h_fields(self._side)

    def _set_raw(self, fields):
        self._c.h_set_fields(self._side, [(_b(k), _b(v)) for k, v in fields])

    def copy(self):
        return Headers(self._raw())


# ---------------------------------------------------------------- messages


def _content_type_params(ct):
    params = {}
    for part in ct.split(";")[1:]:
        k, eq, v = part.partition("=")
        if eq:
            params[k.strip().lower()] = v.strip().strip("\"'")
    return params


def _sniff(pattern, content):
    m = re.search(pattern, content, re.IGNORECASE)
    return m.group(1).decode("ascii", "ignore") if m else None


def _text_encoding(ct, content=b""):
    """The encoding of a body's text, as mitmproxy infers it: a byte-order mark, else the
    Content-Type's charset, else by type (JSON, JavaScript UTF-8; HTML and XML their
    declaration, else UTF-8; CSS its @charset, else UTF-8), else Latin-1 (HTTP/1.1's old
    default for text). GB2312 and GBK are read as their superset GB 18030."""
    boms = (
        (b"\x00\x00\xfe\xff", "utf-32be"), (b"\xff\xfe\x00\x00", "utf-32le"),
        (b"\xfe\xff", "utf-16be"), (b"\xff\xfe", "utf-16le"), (b"\xef\xbb\xbf", "utf-8-sig"),
    )
    enc = next((e for bom, e in boms if content.startswith(bom)), None)
    if enc is None and ct.strip():
        enc = _content_type_params(ct).get("charset")
    if not enc and "json" in ct:
        enc = "utf8"
    if not enc and "html" in ct:
        enc = _sniff(rb"""<meta[^>]+charset=['"]?([^'">]+)""", content) or "utf8"
    if not enc and "xml" in ct:
        enc = _sniff(rb"""<\?xml[^\?>]+encoding=['"]([^'"\?>]+)""", content) or "utf8"
    if not enc and ("javascript" in ct or "ecmascript" in ct):
        enc = "utf8"
    if not enc and "text/css" in ct:
        m = re.match(rb"""@charset "([^"]+)";""", content, re.IGNORECASE)
        enc = m.group(1).decode("ascii", "ignore") if m else "utf8"
    if not enc:
        enc = "latin-1"
    if enc.lower() in ("gb2312", "gbk"):
        enc = "gb18030"
    return enc


def _with_charset(ct, charset):
    base = ct.split(";")[0].strip() or "text/plain"
    params = [p.strip() for p in ct.split(";")[1:] if p.strip() and not p.strip().lower().startswith("charset=")]
    return "; ".join([base, *params, f"charset={charset}"])


def _cookie_pairs(s):
    """The `name=value` pairs of a Cookie header (or of a Set-Cookie's first part), read as
    mitmproxy reads them: names left-trimmed, values up to the next `;`, a value in double
    quotes unquoted (backslash escapes inside)."""
    pairs = []
    i, n = 0, len(s)
    while i < n:
        j = i
        while j < n and s[j] not in ";=":
            j += 1
        name = s[i:j].lstrip()
        value = ""
        if j < n and s[j] == "=":
            j += 1
            if j < n and s[j] == '"':
                chars, escaped = [], False
                j += 1
                while j < n:
                    c = s[j]
                    if escaped:
                        chars.append(c)
                        escaped = False
                    elif c == '"':
                        break
                    elif c == "\\":
                        escaped = True
                    else:
                        chars.append(c)
                    j += 1
                value = "".join(chars)
                j += 1
            else:
                start = j
                while j < n and s[j] != ";":
                    j += 1
                value = s[start:j]
        if name or value:
            pairs.append((name, value))
        i = j + 1
    return pairs


def _cookie_value(v):
    """A cookie value as written: in double quotes (with `"` and `\\` escaped) when it holds
    a separator, a quote, a backslash, a space or anything outside printable ASCII."""
    if any(c in '",;\\' or not 0x21 <= ord(c) <= 0x7E for c in v):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return v


def _parse_qs(q):
    return [(k, v) for k, v in urllib.parse.parse_qsl(q, keep_blank_values=True, errors="surrogateescape")]


def _encode_qs(pairs, similar_to=None):
    enc = urllib.parse.urlencode(list(pairs), False, errors="surrogateescape")
    if similar_to and enc and any("=" not in p for p in similar_to.split("&")):
        enc = enc.replace("=&", "&")
        if enc.endswith("="):
            enc = enc[:-1]
    return enc


class _Prop:
    """A property read from / written to the Rust message (`Core.mget`/`mset`)."""

    def __init__(self, name, readonly=False):
        self.name = name
        self.readonly = readonly

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj._c.mget(obj._side, self.name)

    def __set__(self, obj, value):
        if self.readonly:
            raise AttributeError(f"{self.name} is read-only")
        obj._c.mset(obj._side, self.name, value)


def _set_message_headers(self, value):
    if not isinstance(value, Headers):
        value = Headers(value)
    self._c.h_set_fields(self._side, list(value.fields))


class Message:
    # `__dict__`: a script may set attributes of its own on a request or response, as on
    # mitmproxy's (cleared when a finished flow's views are reused).
    __slots__ = ("_c", "_side", "_headers", "__dict__")

    http_version = _Prop("http_version")
    timestamp_start = _Prop("timestamp_start")
    timestamp_end = _Prop("timestamp_end")
    stream = _Prop("stream")

    def _bind(self, core):
        # The message moved into or out of a flow: it and its headers view follow it.
        self._c = core
        h = self._headers
        if h is not None:
            h._rebind(core)

    # A native descriptor: the `_FlowHeaders` view kept in `_headers` (made on first use),
    # read without a Python frame; assigning replaces the message's headers.
    headers = _waylay.HeadersAttr(_FlowHeaders, _set_message_headers)

    @property
    def raw_content(self):
        return self._c.raw(self._side)

    @raw_content.setter
    def raw_content(self, value):
        self._c.set_raw(self._side, value)

    @property
    def content(self):
        return self._c.content(self._side)

    @content.setter
    def content(self, value):
        if isinstance(value, str):
            raise ValueError(f"Message content must be bytes, not {type(value).__name__}. Please use .text if you want to assign a str.")
        self._c.set_content(self._side, value)

    def get_content(self, strict=True):
        return self._c.content(self._side)

    def set_content(self, value):
        self._c.set_content(self._side, value)

    @property
    def text(self):
        return self.get_text()

    @text.setter
    def text(self, value):
        if value is None:
            self.content = None
            return
        ct = self.headers.get("content-type", "")
        try:
            self.content = value.encode(_text_encoding(ct))
        except (ValueError, LookupError):
            # Not representable in the message's charset: UTF-8, and the header says so.
            self.headers["content-type"] = _with_charset(ct, "utf-8")
            self.content = value.encode("utf-8", "surrogateescape")

    def get_text(self, strict=True):
        c = self.get_content(strict)
        if c is None:
            return None
        try:
            return c.decode(_text_encoding(self.headers.get("content-type", ""), c))
        except (ValueError, LookupError):
            if strict:
                raise
            return c.decode("utf-8", "surrogateescape")

    def set_text(self, text):
        self.text = text

    def json(self, **kwargs):
        c = self.get_content(strict=False)
        if c is None:
            raise TypeError("Message content is not available.")
        return _json.loads(c, **kwargs)

    def decode(self, strict=True):
        try:
            self._c.decode(self._side)
        except ValueError:
            if strict:
                raise

    def encode(self, encoding):
        self._c.encode(self._side, encoding)

    @property
    def trailers(self):
        if not self._c.has_trailers(self._side):
            return None
        return _FlowHeaders(self._c, self._side + 2)

    @trailers.setter
    def trailers(self, value):
        if value is None:
            self._c.clear_trailers(self._side)
            return
        if not isinstance(value, Headers):
            value = Headers(value)
        self._c.h_set_fields(self._side + 2, list(value.fields))

    @property
    def is_http10(self):
        return self.http_version == "HTTP/1.0"

    @property
    def is_http11(self):
        return self.http_version == "HTTP/1.1"

    @property
    def is_http2(self):
        return self.http_version == "HTTP/2.0"


class Request(Message):
    __slots__ = ()

    method = _Prop("method")
    scheme = _Prop("scheme")
    authority = _Prop("authority")
    path = _Prop("path")

    @property
    def host(self):
        return self._c.mget(0, "host")

    @host.setter
    def host(self, value):
        if isinstance(value, bytes):
            value = value.decode("idna")
        self._c.mset(0, "host", value)
        self._update_host_and_authority()

    @property
    def port(self):
        return self._c.mget(0, "port")

    @port.setter
    def port(self, value):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"Port must be an integer, not {value!r}.")
        self._c.mset(0, "port", value)
        self._update_host_and_authority()

    def _update_host_and_authority(self):
        # As mitmproxy: a `Host` header and a non-empty authority follow a new host or port
        # (an IPv6 address in brackets, where mitmproxy writes it bare).
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        default = {"http": 80, "https": 443}.get(self.scheme)
        value = host if self.port == default else f"{host}:{self.port}"
        if "host" in self.headers:
            self.headers["host"] = value
        if self.authority:
            self.authority = value
    pretty_host = _Prop("pretty_host", readonly=True)
    pretty_url = _Prop("pretty_url", readonly=True)

    def __init__(self, *a, **kw):
        raise TypeError("use Request.make(method, url, content, headers)")

    @classmethod
    def _wrap(cls, core, side=0):
        r = object.__new__(cls)
        r._c = core
        r._side = side
        r._headers = None
        return r

    @classmethod
    def make(cls, method, url, content=b"", headers=()):
        core = Core.new_request(method, url)
        r = cls._wrap(core)
        # As mitmproxy: no Host header of its own (the layer adds one on the way out), a
        # given one pointed at the URL's authority, and always a Content-Length.
        authority = r.headers.get("host")
        del r.headers["host"]
        if isinstance(headers, dict):
            headers = list(headers.items())
        elif isinstance(headers, Headers):
            headers = list(headers.fields)
        for k, v in headers:
            if _s(k).lower() == "host" and authority is not None:
                v = authority
            r.headers.add(_s(k), v)
        if isinstance(content, str):
            content = content.encode()
        r.content = content or b""
        if "content-length" not in r.headers:
            r.headers["content-length"] = "0"
        return r

    @property
    def url(self):
        return self._c.mget(0, "url")

    @url.setter
    def url(self, value):
        u = urllib.parse.urlsplit(value)
        self.scheme = u.scheme
        self.host = u.hostname or ""
        self.port = u.port or (443 if u.scheme in ("https", "wss") else 80)
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")

    @property
    def host_header(self):
        # As mitmproxy: HTTP/2 and 3 carry it as the authority (a Host header second).
        if self.http_version in ("HTTP/2.0", "HTTP/3"):
            return self.authority or self.headers.get("host")
        return self.headers.get("host")

    @host_header.setter
    def host_header(self, value):
        h2 = self.http_version in ("HTTP/2.0", "HTTP/3")
        if value is None:
            if h2:
                self.authority = ""
            self.headers.pop("host", None)
        else:
            value = _s(value)
            if h2:
                self.authority = value
            if not h2 or "host" in self.headers:
                self.headers["host"] = value

    def _get_query(self):
        q = self.path.partition("?")[2]
        return _parse_qs(q)

    def _set_query(self, pairs):
        p, _, q = self.path.partition("?")
        enc = _encode_qs(pairs)
        self.path = p + ("?" + enc if enc else "")

    @property
    def query(self):
        return MultiDictView(self._get_query, self._set_query)

    @query.setter
    def query(self, value):
        self._set_query(value.items(multi=True) if isinstance(value, _MultiDictBase) else list(value.items()) if isinstance(value, dict) else value)

    def _get_cookies(self):
        out = []
        for h in self.headers.get_all("cookie"):
            out.extend(_cookie_pairs(h))
        return out

    def _set_cookies(self, pairs):
        self.headers["cookie"] = "; ".join(f"{k}={_cookie_value(v)}" for k, v in pairs)

    @property
    def cookies(self):
        return MultiDictView(self._get_cookies, self._set_cookies)

    @cookies.setter
    def cookies(self, value):
        self._set_cookies(value.items(multi=True) if isinstance(value, _MultiDictBase) else value)

    @property
    def path_components(self):
        p = urllib.parse.urlsplit(self.path).path
        return tuple(urllib.parse.unquote(x) for x in p.split("/") if x)

    @path_components.setter
    def path_components(self, components):
        q = self.path.partition("?")[2]
        p = "/" + "/".join(urllib.parse.quote(c, safe="") for c in components)
        self.path = p + ("?" + q if q else "")

    def _is_form(self):
        return "application/x-www-form-urlencoded" in self.headers.get("content-type", "").lower()

    def _get_urlencoded_form(self):
        if not self._is_form():
            return []
        return _parse_qs(self.get_text(strict=False) or "")

    def _set_urlencoded_form(self, pairs):
        self.headers["content-type"] = "application/x-www-form-urlencoded"
        self.content = _encode_qs(pairs, self.get_text(strict=False)).encode()

    @property
    def urlencoded_form(self):
        return MultiDictView(self._get_urlencoded_form, self._set_urlencoded_form)

    @urlencoded_form.setter
    def urlencoded_form(self, value):
        self._set_urlencoded_form(value.items(multi=True) if isinstance(value, _MultiDictBase) else value)

    def _get_multipart_form(self):
        ct = self.headers.get("content-type", "")
        if not ct.lower().startswith("multipart/form-data"):
            return []
        import email.parser
        import email.policy

        raw = b"Content-Type: " + ct.encode() + b"\r\n\r\n" + (self.content or b"")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        out = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            out.append((name.encode(), part.get_payload(decode=True) or b""))
        return out

    def _set_multipart_form(self, pairs):
        import secrets

        boundary = "waylay" + secrets.token_hex(8)
        body = b""
        for k, v in pairs:
            body += b"--" + boundary.encode() + b"\r\n"
            body += b'Content-Disposition: form-data; name="' + _b(k) + b'"\r\n\r\n' + _b(v) + b"\r\n"
        body += b"--" + boundary.encode() + b"--\r\n"
        self.headers["content-type"] = f"multipart/form-data; boundary={boundary}"
        self.content = body

    @property
    def multipart_form(self):
        return MultiDictView(self._get_multipart_form, self._set_multipart_form)

    @multipart_form.setter
    def multipart_form(self, value):
        self._set_multipart_form(value.items(multi=True) if isinstance(value, _MultiDictBase) else value)

    def anticache(self):
        for h in ("if-modified-since", "if-none-match"):
            self.headers.pop(h, None)

    def anticomp(self):
        self.headers["accept-encoding"] = "identity"

    def constrain_encoding(self):
        ae = self.headers.get("accept-encoding")
        if ae:
            keep = [e for e in ("gzip", "identity", "deflate", "br", "zstd") if e in ae]
            self.headers["accept-encoding"] = ", ".join(keep)

    def __repr__(self):
        if not self._c.attached():
            return "Request(<detached>)"
        return f"Request({self.method} {self.host}:{self.port}{self.path})"


class Response(Message):
    __slots__ = ()

    status_code = _Prop("status_code")
    reason = _Prop("reason")

    def __init__(self, *a, **kw):
        raise TypeError("use Response.make(status_code, content, headers)")

    @classmethod
    def _wrap(cls, core, side=1):
        r = object.__new__(cls)
        r._c = core
        r._side = side
        r._headers = None
        return r

    @classmethod
    def make(cls, status_code=200, content=b"", headers=()):
        core = Core.new_response(int(status_code))
        r = cls._wrap(core)
        if isinstance(headers, dict):
            headers = list(headers.items())
        elif isinstance(headers, Headers):
            headers = list(headers.fields)
        for k, v in headers:
            r.headers.add(_s(k), v)
        if isinstance(content, str):
            content = content.encode()
        elif isinstance(content, (dict, list)):
            raise TypeError("content must be bytes or str")
        r.raw_content = content or b""
        r.headers["content-length"] = str(len(content or b""))
        r.timestamp_end = r.timestamp_start
        return r

    def _get_cookies(self):
        out = []
        for h in self.headers.get_all("set-cookie"):
            first, _, rest = h.partition(";")
            (k, v), = _cookie_pairs(first) or [("", "")]
            a = MultiDict()
            for at in rest.split(";") if rest else []:
                ak, eq, av = at.strip().partition("=")
                a.add(ak, av if eq else None)
            out.append((k, (v, a)))
        return out

    def _set_cookies(self, pairs):
        hs = []
        for k, (v, attrs) in pairs:
            parts = [f"{k}={_cookie_value(v)}"]
            for ak, av in (attrs.items(multi=True) if isinstance(attrs, _MultiDictBase) else attrs):
                if av is None:
                    parts.append(ak)
                else:
                    # As mitmproxy: Expires and Path are written as they are, other values
                    # quoted when they need it.
                    quote = ak.lower() not in ("expires", "path")
                    parts.append(f"{ak}={_cookie_value(av) if quote else av}")
            hs.append("; ".join(parts))
        self.headers.set_all("set-cookie", hs)

    @property
    def cookies(self):
        return MultiDictView(self._get_cookies, self._set_cookies)

    def refresh(self, now=None):
        """Moves the dates (`Date`, `Expires`, `Last-Modified`, cookies' `Expires`) by the
        time since the response started, to serve it again (server replay)."""
        self._c.refresh(now)

    def __repr__(self):
        if not self._c.attached():
            return "Response(<detached>)"
        return f"Response({self.status_code} {self.reason})"


# ---------------------------------------------------------------- flows


class Error:
    KILLED_MESSAGE = "Connection killed."

    def __init__(self, msg, timestamp=None):
        self.msg = msg
        self.timestamp = timestamp or _time.time()

    def __str__(self):
        return self.msg

    def __repr__(self):
        return self.msg


class _Connection:
    __slots__ = ("_c", "_which", "_fields")

    def __init__(self, core=None, which=None, **fields):
        # A view of a flow's connection, or (made by a script, `Server(address=...)`) a new
        # one to give a flow.
        self._c = core
        self._which = which or ("client" if isinstance(self, Client) else "server")
        self._fields = fields

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._c is None:
            return self._fields.get(name)
        return self._c.conn(self._which, name)

    @property
    def alpn_proto_negotiated(self):
        return self.alpn

    @property
    def ip_address(self):
        return self.peername

    @property
    def connected(self):
        return self.timestamp_end is None

    def __repr__(self):
        return f"{'Client' if self._which == 'client' else 'Server'}({self.peername if self._which == 'client' else self.address})"


class Client(_Connection):
    __slots__ = ()


class Server(_Connection):
    __slots__ = ()

    @property
    def via(self):
        """The upstream proxy the connection goes through, `(scheme, (host, port))` (a
        `ServerSpec`); None: direct."""
        v = self._fields.get("via") if self._c is None else self._c.conn("server", "via")
        return None if v is None else (v[0], tuple(v[1]))

    @via.setter
    def via(self, spec):
        if self._c is None:
            self._fields["via"] = spec
            return
        self._c.set_via(None if spec is None else (str(spec[0]), (str(spec[1][0]), int(spec[1][1]))))


class _HookConnection:
    """A connection as a connection/TLS hook sees it: its fields, as plain attributes; the
    ones mitmproxy lets a hook change are read back by waylay afterwards."""

    def __init__(self, fields):
        self._c = None
        self.__dict__.update(fields)

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class _HookClient(_HookConnection, Client):
    _which = "client"


class _HookServer(_HookConnection, Server):
    _which = "server"


class ServerConnectionHookData:
    """Event data for the server connection hooks."""

    def __init__(self, server, client):
        self.server = server
        self.client = client

    def __repr__(self):
        return f"ServerConnectionHookData(server={self.server!r}, client={self.client!r})"


class Context:
    """The connection's context: its client and server."""

    def __init__(self, client, server):
        self.client = client
        self.server = server
        self.options = ctx_options
        self.layers = []


class ClientHello:
    """What the client offered in its TLS ClientHello."""

    def __init__(self, sni, alpn_protocols):
        self._sni = sni
        self._alpn = list(alpn_protocols)

    @property
    def sni(self):
        return self._sni

    @property
    def alpn_protocols(self):
        return list(self._alpn)

    @property
    def cipher_suites(self):
        return []

    @property
    def extensions(self):
        return []

    def __repr__(self):
        return f"ClientHello(sni: {self.sni}, alpn_protocols: {self.alpn_protocols})"


class ClientHelloData:
    """Event data for `tls_clienthello`: set `ignore_connection` to pass the connection
    through untouched."""

    def __init__(self, context, client_hello, ignore_connection=False, establish_server_tls_first=False):
        self.context = context
        self.client_hello = client_hello
        self.ignore_connection = ignore_connection
        self.establish_server_tls_first = establish_server_tls_first


class TlsData:
    """Event data for the `tls_start_*`, `tls_established_*` and `tls_failed_*` hooks."""

    def __init__(self, conn, context, ssl_conn=None, is_dtls=False):
        self.conn = conn
        self.context = context
        self.ssl_conn = ssl_conn
        self.is_dtls = is_dtls


def conn_hook_arg(hook, client, server, extra):
    """The argument of connection/TLS hook `hook` (mitmproxy's name), from plain fields."""
    c = _HookClient(client)
    if hook in ("client_connected", "client_disconnected"):
        return c
    s = _HookServer(server)
    if hook.startswith("server_"):
        return ServerConnectionHookData(server=s, client=c)
    context = Context(c, s)
    if hook == "tls_clienthello":
        return ClientHelloData(
            context,
            ClientHello(extra["sni"], extra["alpn_protocols"]),
            extra["ignore_connection"],
            extra["establish_server_tls_first"],
        )
    conn = c if extra["side"] == "client" else s
    if extra.get("error") is not None:
        conn.error = extra["error"]
    return TlsData(conn, context)


def _flow_prop(name):
    def get(self):
        return self._c.fget(name)

    def set(self, value):
        self._c.fset(name, value)

    return property(get, set)


class Flow:
    __slots__ = ("_c", "metadata", "__dict__", "__weakref__")
    marked = _flow_prop("marked")
    comment = _flow_prop("comment")
    live = property(lambda self: self._c.fget("live"))
    timestamp_created = property(lambda self: self._c.fget("timestamp_created"))
    killable = property(lambda self: self._c.fget("killable"))
    intercepted = property(lambda self: self._c.fget("intercepted"))

    @property
    def id(self):
        return self._c.fget("id")

    @property
    def type(self):
        return "tcp" if isinstance(self, TCPFlow) else "http"

    @property
    def error(self):
        m = self._c.fget("error")
        return None if m is None else Error(m, self._c.fget("error_timestamp"))

    @error.setter
    def error(self, value):
        if isinstance(value, Error):
            value = (str(value.msg), float(value.timestamp))
        elif value is not None:
            value = str(value)
        self._c.fset("error", value)

    @property
    def client_conn(self):
        return Client(self._c, "client")

    @property
    def server_conn(self):
        return Server(self._c, "server")

    @server_conn.setter
    def server_conn(self, value):
        # A new connection for this flow (`Server(address=...)`): not open yet; its `via`.
        if value._c is self._c:
            return
        self._c.new_server(value.address)
        if value.via is not None:
            self.server_conn.via = value.via

    def kill(self):
        self._c.kill()

    def intercept(self):
        self._c.intercept()

    def resume(self):
        self._c.resume()

    async def wait_for_resume(self):
        while self._c.attached() and self.intercepted:
            await asyncio.sleep(0.05)

    def copy(self):
        f = _new_flow(type(self), self._c.copy_flow(), None)
        f.metadata = copy.deepcopy(self.metadata)
        return f

    def backup(self, force=False):
        """Keeps the flow's state (as its flow file's bytes) for `revert`, once, as mitmproxy
        does (which ignores `force` too)."""
        if not self.__dict__.get("_backup"):
            # The metadata apart: the script's dict is the flow's only after the hook.
            self._backup = (self._c.flowfile_bytes(), copy.deepcopy(self.metadata))

    def revert(self):
        """Puts back the request, response, error, mark, comment and metadata `backup` kept."""
        kept = self.__dict__.pop("_backup", None)
        if not kept:
            return
        flows, _ = Core.from_flowfile(kept[0])
        old = _new_flow(type(self), flows[0][1], None)
        if isinstance(self, HTTPFlow):
            self.request = old.request
            self.response = old.response
        self.error = old.error
        self.marked = old.marked
        self.comment = old.comment
        self.metadata = kept[1]

    def modified(self):
        """Whether the flow differs from what `backup` kept (False without a backup)."""
        kept = self.__dict__.get("_backup")
        return bool(kept) and kept != (self._c.flowfile_bytes(), self.metadata)


def _set_flow_response(self, value):
    # `_resp` is the one view of the flow's response; the response it replaces (or removes)
    # goes with that view, so the script's object keeps it and can put it back.
    old = self._resp
    if value is not None and value is old:
        return
    displaced = self._c.adopt(1, None if value is None else value._c)
    if old is not None and displaced is not None:
        old._bind(displaced)
    if value is not None and not value._c.standalone_message():
        # Another flow's response, copied in: that flow keeps its own; this flow's view is
        # made on first use.
        value = None
    elif value is not None:
        value._bind(self._c)
    self._resp = value


class HTTPFlow(Flow):
    __slots__ = ("_req", "_resp", "_ws")

    def __init__(self, *a, **kw):
        raise TypeError("flows are made by waylay")

    @property
    def request(self):
        r = self._req
        if r is None:
            r = self._req = Request._wrap(self._c, 0)
        return r

    @request.setter
    def request(self, value):
        # As the response's setter: the replaced request goes with its view.
        old = self._req
        if value is old:
            return
        displaced = self._c.adopt(0, value._c)
        if old is not None and displaced is not None:
            old._bind(displaced)
        if value._c.standalone_message():
            value._bind(self._c)
            self._req = value
        else:
            # Another flow's request, copied in (as for the response).
            self._req = None

    # A native descriptor: `None` without a response, else the `Response` view kept in
    # `_resp` (made on first use), read without a Python frame.
    response = _waylay.ResponseAttr(Response._wrap, _set_flow_response)

    @property
    def websocket(self):
        if not self._c.fget("has_websocket"):
            return None
        w = self._ws
        if w is None:
            w = self._ws = WebSocketData(self._c)
        return w

    is_replay = _flow_prop("is_replay")

    @property
    def timestamp_start(self):
        return self.request.timestamp_start

    def __repr__(self):
        return f"<HTTPFlow {self.id}>"


class _Messages:
    """`flow.messages` / `flow.websocket.messages`: a live list of the flow's messages."""

    __slots__ = ("_c", "_cls")

    def __init__(self, core, cls):
        self._c = core
        self._cls = cls

    def __len__(self):
        return self._c.msg_count()

    def __getitem__(self, i):
        n = self._c.msg_count()
        if isinstance(i, slice):
            return [self._cls(self._c, j) for j in range(n)[i]]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("message index out of range")
        return self._cls(self._c, i)

    def __iter__(self):
        for j in range(self._c.msg_count()):
            yield self._cls(self._c, j)

    def __bool__(self):
        return self._c.msg_count() > 0


def _msg_prop(name):
    def get(self):
        return self._c.msg_get(self._i, name)

    def set(self, value):
        self._c.msg_set(self._i, name, value)

    return property(get, set)


class WebSocketMessage:
    __slots__ = ("_c", "_i")

    def __init__(self, core, i):
        self._c = core
        self._i = i

    content = _msg_prop("content")
    from_client = property(lambda self: self._c.msg_get(self._i, "from_client"))
    timestamp = property(lambda self: self._c.msg_get(self._i, "timestamp"))
    dropped = property(lambda self: self._c.msg_get(self._i, "dropped"))
    injected = property(lambda self: self._c.msg_get(self._i, "injected"))
    is_text = property(lambda self: self._c.msg_get(self._i, "is_text"))

    @property
    def type(self):
        return 1 if self.is_text else 2

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    @text.setter
    def text(self, value):
        self._c.msg_set(self._i, "content", value.encode())
        self._c.msg_set(self._i, "is_text", True)

    def drop(self):
        self._c.msg_set(self._i, "dropped", True)

    def kill(self):
        self.drop()

    def __repr__(self):
        return f"WebSocketMessage({'client' if self.from_client else 'server'}: {self.content!r})"


class WebSocketData:
    __slots__ = ("_c",)

    def __init__(self, core):
        self._c = core

    @property
    def messages(self):
        return _Messages(self._c, WebSocketMessage)

    close_code = property(lambda self: self._c.ws_get("close_code"))
    close_reason = property(lambda self: self._c.ws_get("close_reason"))
    closed_by_client = property(lambda self: self._c.ws_get("closed_by_client"))
    timestamp_end = property(lambda self: self._c.ws_get("timestamp_end"))


class TCPMessage:
    __slots__ = ("_c", "_i")

    def __init__(self, core, i):
        self._c = core
        self._i = i

    content = _msg_prop("content")
    from_client = property(lambda self: self._c.msg_get(self._i, "from_client"))
    timestamp = property(lambda self: self._c.msg_get(self._i, "timestamp"))
    injected = property(lambda self: self._c.msg_get(self._i, "injected"))

    def __repr__(self):
        return f"TCPMessage({'client' if self.from_client else 'server'}: {self.content!r})"


class TCPFlow(Flow):
    __slots__ = ()

    def __init__(self, *a, **kw):
        raise TypeError("flows are made by waylay")

    @property
    def messages(self):
        return _Messages(self._c, TCPMessage)

    def __repr__(self):
        return f"<TCPFlow {self.id}>"


def _new_flow(cls, core, metadata_json):
    f = object.__new__(cls)
    f._c = core
    f.metadata = _json.loads(metadata_json) if metadata_json else {}
    if cls is HTTPFlow:
        f._req = None
        f._resp = None
        f._ws = None
    return f


# ---------------------------------------------------------------- ctx, log, options


class MitmproxyException(Exception):
    pass


class OptionsError(MitmproxyException):
    pass


class CommandError(Exception):
    pass


class AddonManagerError(MitmproxyException):
    pass


class FlowReadException(MitmproxyException):
    pass


class _Options:
    """`ctx.options`. The values are those of the addon manager that configured the
    scripts on this thread (one per process in the binary; tests run several), else the last
    configured anywhere (the asyncio thread). Setting one goes through waylay's options
    (every addon's `configure` sees it, right after the current hook); the new value reads
    back at once."""

    def __init__(self):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_declared", {})
        object.__setattr__(self, "_tls", threading.local())

    def _configured(self, values):
        object.__setattr__(self, "_values", values)
        self._tls.values = values

    def _view(self):
        return getattr(self._tls, "values", None) or self._values

    def __getattr__(self, name):
        v = self._view()
        if name in v:
            value = v[name]
        elif name in self._declared:
            value = self._declared[name]
        else:
            raise AttributeError(f"No such option: {name}")
        # Sequences are kept as tuples (shared between hooks and threads) and read as a list,
        # as mitmproxy's are (`ctx.options.mode == ["regular"]`); a copy, so changing it in
        # place changes nothing (set the option instead).
        return list(value) if isinstance(value, tuple) else value

    def _applied(self, r, values=None):
        if r[0] == "ok" or r[0] == "pending":
            # Pending: no proxy yet (the module is being imported); applied when it is added.
            new = r[1] if r[0] == "ok" else values
            if new:
                merged = dict(self._view())
                merged.update(new)
                self._configured(merged)
        else:
            raise OptionsError(r[1])

    def __setattr__(self, name, value):
        self.update(**{name: value})

    def update(self, **kwargs):
        self._applied(_waylay.set_options(list(kwargs.items())), kwargs)

    def update_known(self, **kwargs):
        known = {k: v for k, v in kwargs.items() if k in self}
        self.update(**known)
        return {k: v for k, v in kwargs.items() if k not in known}

    def update_defer(self, **kwargs):
        self.update_known(**kwargs)

    def set(self, *specs, defer=False):
        if defer:
            specs = [s for s in specs if s.partition("=")[0] in self]
        self._applied(_waylay.set_specs(list(specs)))

    def setter(self, name):
        if name not in self:
            raise KeyError(f"No such option: {name}")
        return lambda value: self.update(**{name: value})

    def toggler(self, name):
        if name not in self:
            raise KeyError(f"No such option: {name}")
        if not isinstance(getattr(self, name), bool):
            raise ValueError("Toggler can only be used with boolean options")
        return lambda: self.update(**{name: not getattr(self, name)})

    def __contains__(self, name):
        return name in self._view() or name in self._declared

    def keys(self):
        return set(self._view()) | set(self._declared)


class _Log:
    def _emit(self, level, msg):
        _waylay.log(level, "script", str(msg))

    def debug(self, msg):
        self._emit(10, msg)

    def info(self, msg):
        self._emit(20, msg)

    def warn(self, msg):
        self._emit(30, msg)

    warning = warn

    def error(self, msg):
        self._emit(40, msg)

    def alert(self, msg):
        self._emit(20, msg)


class _Handler(logging.Handler):
    def emit(self, record):
        try:
            msg = self.format(record)
        except Exception:
            msg = str(record.msg)
        _waylay.log(record.levelno, record.name, msg)


_root = logging.getLogger()
_root.handlers[:] = [_Handler()]
_root.setLevel(logging.DEBUG)
logging.addLevelName(25, "ALERT")
logging.ALERT = 25


class _Commands:
    """`ctx.master.commands`: the script's own commands, and `inject.websocket`/`inject.tcp`."""

    def __init__(self):
        self.registry = {}

    def call(self, name, *args):
        if name == "inject.websocket":
            flow, to_client, message = args[0], args[1], args[2]
            is_text = args[3] if len(args) > 3 else True
            flow._c.inject(bool(to_client), _b(message), bool(is_text))
            return None
        if name == "inject.tcp":
            flow, to_client, message = args
            flow._c.inject(bool(to_client), _b(message))
            return None
        if name == "replay.client":
            # As mitmproxy's clientplayback: a flow that cannot be replayed is a warning.
            for f in args[0]:
                err = f._c.replay()
                if err:
                    logging.getLogger("mitmproxy.addons.clientplayback").warning(err)
            return None
        if name in self.registry:
            return self.registry[name](*args)
        raise ValueError(f"waylay: unknown command {name!r} for ctx.master.commands.call")

    def execute(self, cmdstr):
        import shlex

        parts = shlex.split(cmdstr)
        return self.call(parts[0], *parts[1:])


def _addon_name(a):
    return getattr(a, "name", type(a).__name__.lower())


class _Addons:
    """`ctx.master.addons`: the scripts' own addons, by mitmproxy's name for one (its `name`
    attribute, else its class's name in lowercase). waylay's bundled addons are Rust, not
    Python objects: `get` answers None for them."""

    def __init__(self):
        self._by_script = {}

    def _set(self, script, addons):
        self._by_script[script] = list(addons)

    def _drop(self, script):
        self._by_script.pop(script, None)

    def get(self, name):
        for addons in self._by_script.values():
            for a in addons:
                if _addon_name(a) == name:
                    return a
        return None

    def __contains__(self, item):
        # mitmproxy's test: by the name of `item` (an addon), so `"name" in addons` is False.
        return self.get(_addon_name(item)) is not None


class _Master:
    def __init__(self):
        self.commands = _Commands()
        self.addons = _Addons()
        self.options = ctx_options

    def shutdown(self):
        _waylay.shutdown()


ctx_options = _Options()
ctx = _module("mitmproxy.ctx")
ctx.options = ctx_options
ctx.log = _Log()
ctx.master = _Master()
mitmproxy.ctx = ctx


# ---------------------------------------------------------------- command decorator


def command(path=None):
    def decorator(fn):
        fn.command_name = path or fn.__name__
        return fn

    return decorator


def argument(name, type=None):
    def decorator(fn):
        return fn

    return decorator


class Loader:
    """What `load(loader)` receives."""

    def __init__(self, host):
        self._host = host

    def add_option(self, name, typespec, default, help, choices=None):
        kinds = {bool: "bool", int: "int", str: "str", typing.Optional[str]: "optional str", typing.Sequence[str]: "sequence of str"}
        kind = kinds.get(typespec)
        if kind is None:
            o = typing.get_origin(typespec)
            if o in (list, tuple, typing.Sequence) or str(typespec).startswith("collections.abc.Sequence"):
                kind = "sequence of str"
            elif typing.get_args(typespec) == (str, type(None)):
                kind = "optional str"
            elif typing.get_args(typespec) == (int, type(None)):
                kind = "optional int"
            else:
                raise TypeError(f"waylay: option {name}: type {typespec!r} is not supported (bool, int, str, Optional[str], Optional[int], Sequence[str] are)")
        if kind == "sequence of str":
            default = list(default or [])
        self._host.option_specs.append((name, kind, default, help, list(choices) if choices else None))
        ctx_options._declared[name] = tuple(default) if kind == "sequence of str" else default

    def add_command(self, path, func):
        self._host.register_command(path, func)


# ---------------------------------------------------------------- the script host

_HOOK_NAMES = {
    "clientconnect": "client_connected",
}


class ScriptLoadError(Exception):
    pass


def _traverse(obj, out, seen):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    out.append(obj)
    for child in getattr(obj, "addons", None) or []:
        _traverse(child, out, seen)


class ScriptHost:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.name = os.path.basename(path)
        self.option_specs = []
        self.command_specs = []
        self.commands = {}
        self.addons = []
        self.module = None

    def _one_line(self, e):
        if isinstance(e, SyntaxError):
            return f"{self.path}:{e.lineno}: SyntaxError: {e.msg}"
        tb = traceback.extract_tb(e.__traceback__)
        line = next((fr.lineno for fr in reversed(tb) if os.path.abspath(fr.filename) == self.path), None)
        where = f"{self.path}:{line}" if line else self.path
        if isinstance(e, ImportError) and (e.name or "").startswith("mitmproxy"):
            missing = getattr(e, "_waylay_missing", None)
            if missing is None:
                msg = str(e)
                missing = msg.split("'")[1] if "'" in msg else msg
                if "cannot import name" in msg:
                    return f"{where}: waylay does not provide {e.name}.{missing} (ImportError: {msg})"
            return f"{where}: waylay does not provide {missing} (ImportError: {e})"
        return f"{where}: {type(e).__name__}: {e}"

    def load(self):
        d = os.path.dirname(self.path)
        if d not in sys.path:
            sys.path.insert(0, d)
        modname = "__waylay_script_" + os.path.splitext(self.name)[0]
        try:
            with open(self.path, "rb") as f:
                src = f.read()
            code = compile(src, self.path, "exec")
            mod = types.ModuleType(os.path.splitext(self.name)[0])
            mod.__file__ = self.path
            sys.modules[modname] = mod
            exec(code, mod.__dict__)
        except BaseException as e:
            raise ScriptLoadError(self._one_line(e)) from None
        self.module = mod
        top = getattr(mod, "addons", None)
        out, seen = [], set()
        if top is not None:
            for a in top:
                _traverse(a, out, seen)
        else:
            _traverse(mod, out, seen)
        self.addons = out
        ctx.master.addons._set(self, out)
        for a in out:
            for attr in dir(a):
                fn = getattr(a, attr, None)
                cname = getattr(fn, "command_name", None)
                if cname and callable(fn):
                    self.register_command(cname, fn)
        loader = Loader(self)
        for a in out:
            f = getattr(a, "load", None)
            if callable(f):
                try:
                    f(loader)
                except BaseException as e:
                    raise ScriptLoadError(self._one_line(e)) from None

    def register_command(self, name, fn):
        self.commands[name] = fn
        doc = (inspect.getdoc(fn) or "").split("\n")[0]
        self.command_specs.append((name, doc))
        ctx.master.commands.registry[name] = fn

    def methods(self, hook):
        out = []
        for a in self.addons:
            if isinstance(a, types.ModuleType) and hook in ("load",):
                continue
            f = getattr(a, hook, None)
            if f is not None and callable(f) and not isinstance(f, type):
                out.append((f, inspect.iscoroutinefunction(f)))
        return out

    def configure(self, updated, values):
        ctx_options._configured(dict(values))
        for a in self.addons:
            f = getattr(a, "configure", None)
            if callable(f):
                f(updated)

    def lifecycle(self, name):
        if name == "done":
            ctx.master.addons._drop(self)
        for a in self.addons:
            f = getattr(a, name, None)
            if callable(f):
                try:
                    r = f()
                    if inspect.iscoroutine(r):
                        asyncio.run_coroutine_threadsafe(r, _loop()).result(timeout=30)
                except Exception:
                    _waylay.log(40, "script", f"{self.name}: error in {name}:\n" + traceback.format_exc().rstrip())

    def command(self, name, args):
        fn = self.commands.get(name)
        if fn is None:
            raise ValueError(f"unknown command {name}")
        sig = inspect.signature(fn)
        conv = []
        params = [p for p in sig.parameters.values()]
        for p, a in zip(params, args):
            t = p.annotation
            if t is int:
                a = int(a)
            elif t is bool:
                a = a.lower() in ("true", "1", "yes", "on")
            elif t is float:
                a = float(a)
            conv.append(a)
        r = fn(*conv)
        return "" if r is None else str(r)


# ---------------------------------------------------------------- async hooks

_async_loop = None
_async_lock = threading.Lock()


def _loop():
    global _async_loop
    with _async_lock:
        if _async_loop is None:
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="waylay-asyncio", daemon=True)
            t.start()
            _async_loop = loop
        return _async_loop


_asyncio_create_task = asyncio.create_task


def _create_task(coro, *, name=None, context=None):
    """`asyncio.create_task` from a synchronous hook, as mitmproxy scripts call it to start
    background work: in mitmproxy such a hook runs on the event loop; in waylay it runs on the
    addon manager's thread, with no loop running there, so the task goes to the scripts'
    asyncio loop (a thread of its own). What it returns is a `concurrent.futures.Future`
    (`add_done_callback`, `cancel`, `done`, `result`), which is what such scripts use of a
    task. Anywhere a loop runs, it is asyncio's own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run_coroutine_threadsafe(coro, _loop())
    if context is None:
        return _asyncio_create_task(coro, name=name)
    return _asyncio_create_task(coro, name=name, context=context)


asyncio.create_task = _create_task


# The hooks running on the asyncio loop. asyncio holds a task only weakly; a hook waiting on
# something only it references (`await asyncio.Event().wait()`) forms a cycle with the future
# that reports it, which the garbage collector could free mid-hook (the flow then went on as
# if the hook had returned). Held here until they finish.
_running_hooks = set()


def run_async(coro, waker):
    fut = asyncio.run_coroutine_threadsafe(coro, _loop())
    _running_hooks.add(fut)

    def done(f):
        _running_hooks.discard(f)
        exc = f.exception()
        if exc is None:
            waker(None)
        else:
            waker("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())

    fut.add_done_callback(done)


def wrap_http(core, metadata_json):
    return _new_flow(HTTPFlow, core, metadata_json)


def wrap_tcp(core, metadata_json):
    return _new_flow(TCPFlow, core, metadata_json)


def metadata_json(d):
    return _json.dumps(d, default=repr)


# ---------------------------------------------------------------- flowfilter


class TFilter:
    """A compiled filter expression (waylay's filter language, mitmproxy's syntax)."""

    __slots__ = ("_f", "pattern")

    def __init__(self, spec):
        self._f = _waylay.Filter(spec)
        self.pattern = spec

    def __call__(self, flow):
        return self._f.matches(flow._c)

    def __repr__(self):
        return repr(self._f)


def _filter_parse(spec):
    return TFilter(spec)


def _filter_match(flt, flow):
    if isinstance(flt, str):
        flt = _filter_parse(flt)
    return flt(flow)


# ---------------------------------------------------------------- the modules

http = _module("mitmproxy.http")
_export(http, HTTPFlow, Request, Response, Headers, Message)
http.Headers = Headers

tcp = _module("mitmproxy.tcp")
_export(tcp, TCPFlow, TCPMessage)

websocket = _module("mitmproxy.websocket")
_export(websocket, WebSocketMessage, WebSocketData)

flow_mod = _module("mitmproxy.flow")
_export(flow_mod, Flow, Error)

connection = _module("mitmproxy.connection")
_export(connection, Client, Server)


class ConnectionState(enum.Flag):
    CLOSED = 0
    CAN_READ = 1
    CAN_WRITE = 2
    OPEN = CAN_READ | CAN_WRITE


_export(connection, ConnectionState, Connection=_Connection, Address=tuple[str, int],
        TransportProtocol=typing.Literal["tcp", "udp"])

command_mod = _module("mitmproxy.command")
command_mod.command = command
command_mod.argument = argument

addonmanager = _module("mitmproxy.addonmanager")
_export(addonmanager, Loader)

log_mod = _module("mitmproxy.log")
log_mod.ALERT = 25

flowfilter = _module("mitmproxy.flowfilter")
flowfilter.parse = _filter_parse
flowfilter.match = _filter_match
flowfilter.TFilter = TFilter

coretypes = _module("mitmproxy.coretypes")
multidict_mod = _module("mitmproxy.coretypes.multidict")
_export(multidict_mod, MultiDict, MultiDictView)
coretypes.multidict = multidict_mod

types_mod = _module("mitmproxy.types")


# Argument types of `@command.command` annotations: markers for what the argument means.
class Path(str):
    pass


class Cmd(str):
    pass


class CmdArgs(str):
    pass


class Marker(str):
    pass


class Choice:
    def __init__(self, options_command):
        self.options_command = options_command


class Data:
    pass


_export(types_mod, Path, Cmd, CmdArgs, Marker, Choice, Data)

# mitmproxy.utils.strutils: the helpers scripts use to show bytes.
utils_mod = _module("mitmproxy.utils")
strutils = _module("mitmproxy.utils.strutils")
utils_mod.strutils = strutils


def always_bytes(str_or_bytes, *encode_args):
    if str_or_bytes is None or isinstance(str_or_bytes, bytes):
        return str_or_bytes
    if isinstance(str_or_bytes, str):
        return str_or_bytes.encode(*encode_args)
    raise TypeError(f"Expected str or bytes, but got {type(str_or_bytes).__name__}.")


def always_str(str_or_bytes, *decode_args):
    if str_or_bytes is None or isinstance(str_or_bytes, str):
        return str_or_bytes
    if isinstance(str_or_bytes, bytes):
        return str_or_bytes.decode(*decode_args)
    raise TypeError(f"Expected str or bytes, but got {type(str_or_bytes).__name__}.")


def _unescape_some(text, wanted):
    # Undoes the backslash escapes of the characters in `wanted` (a dict from the escape
    # letter to the character), leaving an escaped backslash before them alone.
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in wanted:
                out.append(wanted[nxt])
            else:
                out.append(c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def bytes_to_escaped_str(data, keep_spacing=False, escape_single_quotes=False):
    """Bytes as printable text: Python's escapes for what is not printable ASCII; single
    quotes escaped only if asked, double quotes never; tabs and newlines kept as they are
    with `keep_spacing`."""
    if not isinstance(data, bytes):
        raise ValueError(f"data must be bytes, but is {data.__class__.__name__}")
    # repr() of bytes that contain a double quote always uses single quotes.
    text = repr(b'"' + data)[3:-1]
    wanted = {}
    if not escape_single_quotes:
        wanted["'"] = "'"
    if keep_spacing:
        wanted.update({"n": "\n", "r": "\r", "t": "\t"})
    return _unescape_some(text, wanted) if wanted else text


def escaped_str_to_bytes(data):
    """The bytes an escaped text (as `bytes_to_escaped_str` gives) stands for."""
    if not isinstance(data, str):
        raise ValueError(f"data must be str, but is {data.__class__.__name__}")
    return codecs.escape_decode(data.encode("utf-8", "surrogateescape"))[0]


def escape_control_characters(text, keep_spacing=True):
    """Each C0 control character and DEL as a `.` (tab, newline and carriage return kept
    with `keep_spacing`)."""
    if not isinstance(text, str):
        raise ValueError(f"text type must be unicode but is {type(text).__name__}")
    keep = {9, 10, 13} if keep_spacing else set()
    return "".join(
        c if (ord(c) >= 32 and ord(c) != 127) or ord(c) in keep else "." for c in text
    )


def clean_hanging_newline(t):
    if t and t[-1] == "\n":
        return t[:-1]
    return t


def _is_control(code):
    # C0 controls other than the spacing ones (tab, newline, vertical tab, form feed, CR).
    return code < 9 or 13 < code < 32


def is_mostly_bin(s):
    """Whether the start of `s` (about 100 bytes, not cutting a UTF-8 sequence) looks binary:
    three in ten of its characters controls (its bytes, controls or above ASCII, when it is
    not UTF-8)."""
    if not s:
        return False
    head = s[:100]
    if len(s) > 100:
        for cut in range(100, min(104, len(s))):
            if s[cut] >> 6 != 0b10:
                head = s[:cut]
                break
    try:
        codes = [ord(c) for c in head.decode("utf-8")]
        odd = sum(_is_control(c) for c in codes)
    except UnicodeDecodeError:
        codes = head
        odd = sum(_is_control(b) or b > 126 for b in head)
    return odd / len(codes) >= 0.3


def is_xml(s):
    """Whether `s` starts, after white space, with `<`."""
    return s.strip().startswith(b"<")


_export(strutils, always_bytes, always_str, bytes_to_escaped_str, escaped_str_to_bytes,
        escape_control_characters, clean_hanging_newline, is_mostly_bin, is_xml)

# mitmproxy.utils.human: sizes, durations, addresses and times as people read them.
human = _module("mitmproxy.utils.human")
utils_mod.human = human
_SIZE_UNITS = "kmgt"


def pretty_size(size):
    """`size` bytes in at most five characters: `1023b`, `1.5k`, `100k`, `7.0g`."""
    if size < 1024:
        return f"{size}b"
    value, unit = size, "b"
    for unit in _SIZE_UNITS:
        value /= 1024
        if value < 1024:
            break
    text = f"{value:.1f}"
    return (text if len(text) <= 4 else f"{value:.0f}") + unit


def parse_size(s):
    """`2k`, `3m`, `1g`, `1t` (powers of 1024) or a plain number of bytes; `None` stays."""
    if s is None:
        return None
    try:
        return int(s)
    except ValueError:
        pass
    unit = s[-1:]
    if unit in ("b", *_SIZE_UNITS):
        try:
            return int(s[:-1]) * 1024 ** ("b" + _SIZE_UNITS).index(unit)
        except ValueError:
            pass
    raise ValueError("Invalid size specification.")


def pretty_duration(secs):
    """`500ms`, `1.50s`, `10.0s`, `100s`; empty for None."""
    if secs is None:
        return ""
    if secs < 1:
        return f"{secs * 1000:.0f}ms"
    if secs < 10:
        return f"{secs:.2f}s"
    if secs < 100:
        return f"{secs:.1f}s"
    return f"{secs:.0f}s"


def format_timestamp(s):
    import datetime

    return datetime.datetime.fromtimestamp(s).strftime("%Y-%m-%d %H:%M:%S")


def format_timestamp_with_milli(s):
    import datetime

    return datetime.datetime.fromtimestamp(s).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_address(address):
    """`host:port`, an IPv6 host in brackets, an IPv4-mapped one as IPv4."""
    if not address:
        return "<no address>"
    import ipaddress

    host, port = address[0], address[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return f"{ip.ipv4_mapped}:{port}"
    if ip.version == 6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


_export(human, pretty_size, parse_size, pretty_duration, format_timestamp,
        format_timestamp_with_milli, format_address)

proxy_mod = _module("mitmproxy.proxy")
server_hooks = _module("mitmproxy.proxy.server_hooks")
_export(server_hooks, ServerConnectionHookData)
context_mod = _module("mitmproxy.proxy.context")
_export(context_mod, Context)
proxy_mod.server_hooks = server_hooks
proxy_mod.context = context_mod

tls_mod = _module("mitmproxy.tls")
_export(tls_mod, ClientHello, ClientHelloData, TlsData)

# mitmproxy.script: `@concurrent`, the older way to keep a slow hook from holding the others:
# the hook runs in a thread of the asyncio loop's pool, and only its own flow waits for it.
_CONCURRENT_HOOKS = {
    "requestheaders", "request", "responseheaders", "response", "error", "http_connect",
    "http_connect_upstream", "http_connect_error", "client_connected", "client_disconnected",
    "server_connect", "server_connected", "server_disconnected", "server_connect_error",
    "tcp_start", "tcp_message", "tcp_error", "tcp_end", "websocket_start", "websocket_message",
    "websocket_error", "websocket_end", "tls_clienthello", "tls_start_client",
    "tls_start_server", "tls_established_client", "tls_established_server",
    "tls_failed_client", "tls_failed_server", "next_layer", "running", "done", "update",
}


def concurrent(fn):
    if fn.__name__ not in _CONCURRENT_HOOKS:
        raise NotImplementedError(f"Concurrent decorator not supported for '{fn.__name__}' method.")

    async def in_a_thread(*args):
        def call():
            if inspect.iscoroutinefunction(fn):
                asyncio.run(fn(*args))
            else:
                fn(*args)

        await asyncio.get_running_loop().run_in_executor(None, call)

    in_a_thread.__name__ = fn.__name__
    in_a_thread.__qualname__ = getattr(fn, "__qualname__", fn.__name__)
    return in_a_thread


script_mod = _module("mitmproxy.script")
script_mod.concurrent = concurrent

exceptions = _module("mitmproxy.exceptions")
_export(exceptions, MitmproxyException, OptionsError, CommandError, AddonManagerError, FlowReadException)


# mitmproxy.io: flow files from a script (waylay's reader and writer, mitmproxy's format).
class FlowWriter:
    def __init__(self, fo):
        self.fo = fo

    def add(self, flow):
        self.fo.write(flow._c.flowfile_bytes())


class FlowReader:
    def __init__(self, fo):
        self.fo = fo

    def stream(self):
        flows, error = Core.from_flowfile(self.fo.read())
        for kind, core, metadata in flows:
            yield _new_flow(HTTPFlow if kind == "http" else TCPFlow, core, metadata)
        if error is not None:
            raise FlowReadException(error)


def read_flows_from_paths(paths):
    flows = []
    for path in paths:
        path = os.path.expanduser(path)
        try:
            with open(path, "rb") as f:
                flows.extend(FlowReader(f).stream())
        except OSError as e:
            raise FlowReadException(e.strerror)
    return flows


io_mod = _module("mitmproxy.io")
_export(io_mod, FlowWriter, FlowReader, read_flows_from_paths)


def options_configured(values):
    ctx_options._configured(dict(values))

host_mod = _module("mitmproxy._host")
for _n in ("ScriptHost", "ScriptLoadError", "wrap_http", "wrap_tcp", "run_async", "metadata_json",
           "options_configured", "conn_hook_arg"):
    setattr(host_mod, _n, globals()[_n])

for _n, _m in (("http", http), ("tcp", tcp), ("websocket", websocket), ("flow", flow_mod),
               ("connection", connection), ("command", command_mod), ("addonmanager", addonmanager),
               ("log", log_mod), ("flowfilter", flowfilter), ("coretypes", coretypes), ("types", types_mod),
               ("exceptions", exceptions), ("proxy", proxy_mod), ("tls", tls_mod), ("script", script_mod),
               ("utils", utils_mod), ("io", io_mod)):
    setattr(mitmproxy, _n, _m)


# mitmproxy.net.server_spec: where a server or an upstream proxy is, `(scheme, (host, port))`.
net_mod = _module("mitmproxy.net")
server_spec_mod = _module("mitmproxy.net.server_spec")
net_mod.server_spec = server_spec_mod


_SPEC_SCHEMES = ("http", "https", "http3", "tls", "dtls", "tcp", "udp", "dns", "quic")
# As mitmproxy's: a type, `ServerSpec(("http", ("host", 8080)))` is that tuple.
ServerSpec = tuple[typing.Literal[_SPEC_SCHEMES], tuple[str, int]]


def _parse_server_spec(server_spec, default_scheme):
    """`http://host:port`, `host:port` (the default scheme), `https://[::1]/` ->
    `(scheme, (host, port))`; a bad one raises ValueError."""
    m = re.fullmatch(r"(?:(\w+)://)?([^:/]+|\[.+\])(?::(\d+))?/?", server_spec)
    if not m:
        raise ValueError(f"Invalid server specification: {server_spec}")
    scheme = m.group(1) or default_scheme
    if scheme not in _SPEC_SCHEMES:
        raise ValueError(f"Invalid server scheme: {scheme}")
    host = m.group(2)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if m.group(3):
        port = int(m.group(3))
    else:
        port = {"http": 80, "https": 443, "quic": 443, "http3": 443, "dns": 53}.get(scheme)
        if port is None:
            raise ValueError("Port specification missing.")
    if not 0 <= port <= 65535:
        raise ValueError(f"Invalid port: {port}")
    return scheme, (host, port)


_export(server_spec_mod, ServerSpec=ServerSpec, parse=_parse_server_spec)
mitmproxy.net = net_mod


class _MissingFinder:
    """Any other `mitmproxy.*` module: a one-line ImportError naming it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "mitmproxy" or name.startswith("mitmproxy."):
            if name not in sys.modules:
                e = ModuleNotFoundError(f"waylay does not provide {name}", name=name)
                e._waylay_missing = name
                raise e
        return None


sys.meta_path.insert(0, _MissingFinder)
