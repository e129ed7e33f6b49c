"""GOST R 34.10-2012 (256) signatures and GOST R 34.11-2012 (Streebog-256) digests, natively.

The system OpenSSL 3 with Debian's ``gost`` engine (``libengine-gost-openssl``), through
:mod:`ctypes`: an independent, maintained implementation, far faster than pure Python, and
ctypes releases the GIL during each call, so worker threads sign in parallel. The
``cryptography`` wheel bundles its own OpenSSL, which cannot load the engine; it still reads
certificates' names and dates here.

Signature values are the engine's raw 64 bytes (s then r, big-endian): exactly what SMEV 3
carries in ``ds:SignatureValue`` (real SMEV messages verify as they are), so nothing is reversed.

Each call makes and frees its own EVP_MD_CTX; keys are only read once loaded. OpenSSL's
error queue is drained after every failure, because Python's ``ssl`` and ``hashlib`` share
this libcrypto and would trip over our leftovers.
"""

from __future__ import annotations

import contextlib
import ctypes
import secrets
import threading
import warnings
import weakref
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.domain.faults import Failure, InvalidContent, SignatureVerificationFault

PACKAGE = "libengine-gost-openssl"
SIGNATURE_METHOD = "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34102012-gostr34112012-256"
DIGEST_METHOD = "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34112012-256"
KEY_OID = x509.ObjectIdentifier("1.2.643.7.1.1.1.1")  # GOST R 34.10-2012 with a 256-bit key


class GostUnavailable(Failure):
    """libcrypto.so.3 or its ``gost`` engine cannot be loaded: an installation problem, not a data one."""


class GostError(Failure):
    """A libcrypto call failed where it should not have; OpenSSL's own reasons are in the message."""


class InvalidGostKey(InvalidContent):
    """A key or certificate that cannot be read, or is not GOST R 34.10-2012 (256)."""


class GostSignatureInvalid(SignatureVerificationFault):
    """The signature does not match the data under this certificate's key."""


# Qualified Russian certificates routinely carry names longer than X.520's 64 characters (the CN of a
# ministry is 157); ``cryptography`` warns on reading each one, which would drown ``ejx verify``'s output.
warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)

_c, _p, _i, _z = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_PROTOTYPES = {  # name: (restype, *argtypes)
    "ENGINE_by_id": (_p, _c), "ENGINE_init": (_i, _p), "ENGINE_set_default": (_i, _p, ctypes.c_uint),
    "ERR_get_error": (ctypes.c_ulong,), "ERR_error_string_n": (None, ctypes.c_ulong, _c, _z),
    "OBJ_sn2nid": (_i, _c), "EVP_get_digestbyname": (_p, _c),
    "EVP_Digest": (_i, _c, _z, _c, ctypes.POINTER(ctypes.c_uint), _p, _p),
    "EVP_MD_CTX_new": (_p,), "EVP_MD_CTX_free": (None, _p),
    "EVP_DigestSignInit": (_i, _p, _p, _p, _p, _p), "EVP_DigestSign": (_i, _p, _c, ctypes.POINTER(_z), _c, _z),
    "EVP_DigestVerifyInit": (_i, _p, _p, _p, _p, _p), "EVP_DigestVerify": (_i, _p, _c, _z, _c, _z),
    "EVP_PKEY_free": (None, _p), "EVP_PKEY_get_base_id": (_i, _p), "EVP_PKEY_get_size": (_i, _p),
    "EVP_PKEY_CTX_new_id": (_p, _i, _p), "EVP_PKEY_CTX_free": (None, _p), "EVP_PKEY_keygen_init": (_i, _p),
    "EVP_PKEY_CTX_ctrl_str": (_i, _p, _c, _c), "EVP_PKEY_keygen": (_i, _p, ctypes.POINTER(_p)),
    "BIO_new_mem_buf": (_p, _c, _i), "BIO_new": (_p, _p), "BIO_s_mem": (_p,), "BIO_free": (_i, _p),
    "BIO_ctrl": (ctypes.c_long, _p, _i, ctypes.c_long, _p),
    "PEM_read_bio_PrivateKey": (_p, _p, _p, _p, _c), "PEM_write_bio_X509": (_i, _p, _p),
    "PEM_write_bio_PrivateKey": (_i, _p, _p, _p, _p, _i, _p, _p),
    "d2i_X509": (_p, _p, ctypes.POINTER(_c), ctypes.c_long), "X509_get_pubkey": (_p, _p),
    "X509_new": (_p,), "X509_free": (None, _p), "X509_set_version": (_i, _p, ctypes.c_long),
    "BN_bin2bn": (_p, _c, _i, _p), "BN_free": (None, _p), "BN_to_ASN1_INTEGER": (_p, _p, _p),
    "ASN1_INTEGER_free": (None, _p), "X509_set_serialNumber": (_i, _p, _p),
    "X509_getm_notBefore": (_p, _p), "X509_getm_notAfter": (_p, _p), "X509_gmtime_adj": (_p, _p, ctypes.c_long),
    "X509_get_subject_name": (_p, _p), "X509_set_issuer_name": (_i, _p, _p), "X509_set_pubkey": (_i, _p, _p),
    "X509_NAME_add_entry_by_txt": (_i, _p, _c, _i, _c, _i, _i, _i),
    "X509V3_EXT_nconf_nid": (_p, _p, _p, _i, _c), "X509_add_ext": (_i, _p, _p, _i),
    "X509_EXTENSION_free": (None, _p), "X509_sign": (_i, _p, _p, _p),
}
_ENGINE_METHODS = 0x0080 | 0x0200 | 0x0400  # digests, pkey methods, pkey ASN.1 methods: only what GOST keys need
_BIO_GET_MEM_DATA, _MBSTRING_UTF8 = 3, 0x1000


@dataclass(frozen=True)
class _Crypto:
    lib: ctypes.CDLL
    md: int  # EVP_MD* of md_gost12_256, owned by the engine for the process' lifetime
    key_nid: int


_loaded: _Crypto | None = None
_load_lock = threading.Lock()


def _crypto() -> _Crypto:
    """libcrypto with the engine set as default for GOST algorithms; loaded once, on first use."""
    global _loaded
    if _loaded is not None:  # the common case takes no lock
        return _loaded
    with _load_lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _load() -> _Crypto:
    try:
        lib = ctypes.CDLL("libcrypto.so.3")
        for name, (restype, *argtypes) in _PROTOTYPES.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    except (OSError, AttributeError) as error:
        raise GostUnavailable(f"OpenSSL 3's libcrypto.so.3 cannot be used ({error}); "
                              f"install the Debian packages libssl3 and {PACKAGE}") from None
    engine = lib.ENGINE_by_id(b"gost")
    if not engine or lib.ENGINE_init(engine) != 1 or lib.ENGINE_set_default(engine, _ENGINE_METHODS) != 1:
        reason = _drain(lib)
        raise GostUnavailable(f"OpenSSL's gost engine cannot be loaded ({reason}); "
                              f"install the Debian package {PACKAGE}")
    md, key_nid = lib.EVP_get_digestbyname(b"md_gost12_256"), lib.OBJ_sn2nid(b"gost2012_256")
    if not md or key_nid <= 0:
        raise GostUnavailable(f"the gost engine lacks Streebog-256 or GOST 2012-256 ({_drain(lib)}); "
                              f"reinstall {PACKAGE}")
    return _Crypto(lib, md, key_nid)  # the engine's references are kept for the process' lifetime


def _drain(lib: ctypes.CDLL) -> str:
    """Empty this thread's OpenSSL error queue and say what was in it."""
    reasons, buffer = [], ctypes.create_string_buffer(256)
    while code := lib.ERR_get_error():
        lib.ERR_error_string_n(code, buffer, len(buffer))
        reasons.append(buffer.value.decode(errors="replace"))
    return "; ".join(reasons) or "no reason given"


def _check(ok: object, what: str) -> None:
    if not ok or (isinstance(ok, int) and ok <= 0):
        raise GostError(f"{what} failed: {_drain(_crypto().lib)}")


def streebog256(data: bytes) -> bytes:
    """GOST R 34.11-2012 256-bit digest of ``data`` (the DigestValue of SMEV references)."""
    c, out, size = _crypto(), ctypes.create_string_buffer(32), ctypes.c_uint(0)
    _check(c.lib.EVP_Digest(data, len(data), out, ctypes.byref(size), c.md, None), "EVP_Digest")
    return out.raw[:size.value]


class _Key:
    """An owned EVP_PKEY*, freed when the Python object goes (not at interpreter exit: the OS does that)."""

    def __init__(self, pointer: int, what: str) -> None:
        c = _crypto()
        self.pointer = pointer
        weakref.finalize(self, c.lib.EVP_PKEY_free, pointer).atexit = False
        if c.lib.EVP_PKEY_get_base_id(pointer) != c.key_nid:
            raise InvalidGostKey(f"{what} is not a GOST R 34.10-2012 (256) key")


class GostPrivateKey:
    """A GOST R 34.10-2012 (256) private key, parsed once; ``sign`` may run in many threads at once."""

    def __init__(self, pointer: int) -> None:  # takes over an EVP_PKEY*; callers use from_pem
        self._key = _Key(pointer, "the private key")

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> GostPrivateKey:
        """PKCS#8 (or legacy) PEM; a password-less read of an encrypted key fails instead of prompting."""
        lib = _crypto().lib
        with _owned(lib.BIO_new_mem_buf(pem, len(pem)), lib.BIO_free, "BIO_new_mem_buf") as bio:
            pointer = lib.PEM_read_bio_PrivateKey(bio, None, None, password or b"")  # non-NULL: never a tty prompt
        if not pointer:
            raise InvalidGostKey(f"the private key cannot be read (not a PEM key, or a wrong password): {_drain(lib)}")
        return cls(pointer)

    def sign(self, data: bytes) -> bytes:
        """Streebog-256 of ``data`` signed: the 64 bytes of ``ds:SignatureValue``, before base64."""
        c = _crypto()
        lib, size = c.lib, ctypes.c_size_t(c.lib.EVP_PKEY_get_size(self._key.pointer))
        out = ctypes.create_string_buffer(size.value)
        with _owned(lib.EVP_MD_CTX_new(), lib.EVP_MD_CTX_free, "EVP_MD_CTX_new") as ctx:
            _check(lib.EVP_DigestSignInit(ctx, None, c.md, None, self._key.pointer), "EVP_DigestSignInit")
            _check(lib.EVP_DigestSign(ctx, out, ctypes.byref(size), data, len(data)), "EVP_DigestSign")
        return out.raw[:size.value]

    def __repr__(self) -> str:
        return "GostPrivateKey(<GOST R 34.10-2012 256>)"


@dataclass(frozen=True, eq=False)
class GostCertificate:
    """An X.509 certificate; when ``is_gost``, its GOST 2012-256 key verifies signatures (thread-safe)."""

    x509: x509.Certificate
    _key: _Key | None = field(repr=False)

    @classmethod
    def from_pem(cls, pem: bytes) -> GostCertificate:
        return cls._of(x509.load_pem_x509_certificate, pem)

    @classmethod
    def from_der(cls, der: bytes) -> GostCertificate:
        """Any X.509 certificate (``cryptography`` reads it); only a GOST 2012-256 one can ``verify``."""
        return cls._of(x509.load_der_x509_certificate, der)

    @classmethod
    def _of(cls, load, data: bytes) -> GostCertificate:
        try:
            certificate = load(data)
        except ValueError as error:
            raise InvalidGostKey(f"the certificate cannot be read: {error}") from None
        if certificate.public_key_algorithm_oid != KEY_OID:
            return cls(certificate, None)
        lib, der = _crypto().lib, certificate.public_bytes(Encoding.DER)
        with _owned(lib.d2i_X509(None, ctypes.byref(ctypes.c_char_p(der)), len(der)), lib.X509_free, "d2i_X509") as x:
            pointer = lib.X509_get_pubkey(x)  # a new reference, owned by _Key
        if not pointer:
            raise InvalidGostKey(f"the certificate's GOST key cannot be read: {_drain(lib)}")
        return cls(certificate, _Key(pointer, "the certificate's key"))

    is_gost = property(lambda self: self._key is not None, doc="Whether the key is GOST R 34.10-2012 (256).")
    subject = property(lambda self: self.x509.subject.rfc4514_string(), doc="RFC 4514, as the rest of ejx.")
    serial_number = property(lambda self: self.x509.serial_number)
    not_before = property(lambda self: self.x509.not_valid_before_utc)
    not_after = property(lambda self: self.x509.not_valid_after_utc)
    der = property(lambda self: self.x509.public_bytes(Encoding.DER))

    def verify(self, data: bytes, signature: bytes) -> None:
        """Raise :class:`GostSignatureInvalid` unless ``signature`` (SignatureValue bytes) signs ``data``."""
        if self._key is None:
            raise GostSignatureInvalid(f"certificate {self.subject} does not hold a GOST R 34.10-2012 (256) key")
        c = _crypto()
        lib = c.lib
        with _owned(lib.EVP_MD_CTX_new(), lib.EVP_MD_CTX_free, "EVP_MD_CTX_new") as ctx:
            _check(lib.EVP_DigestVerifyInit(ctx, None, c.md, None, self._key.pointer), "EVP_DigestVerifyInit")
            ok = lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data))
        if ok != 1:  # 0 is a mismatch, < 0 a malformed signature: both are the signer's problem
            _drain(lib)
            raise GostSignatureInvalid(f"the GOST signature does not match under {self.subject}")


def generate_key_and_certificate(common_name: str, *, days: int = 365, paramset: str = "A") -> tuple[bytes, bytes]:
    """A new GOST 2012-256 key (PKCS#8 PEM) and a self-signed certificate for it (PEM): development only.

    Built with libcrypto directly, like everything here, so no ``openssl`` binary is needed;
    CA:FALSE and for signatures only, as ``broker.keys`` development pairs are.
    """
    c = _crypto()
    lib = c.lib
    with contextlib.ExitStack() as stack:
        def owned(pointer: int | None, free, what: str) -> int:
            return stack.enter_context(_owned(pointer, free, what))

        ctx = owned(lib.EVP_PKEY_CTX_new_id(c.key_nid, None), lib.EVP_PKEY_CTX_free, "EVP_PKEY_CTX_new_id")
        _check(lib.EVP_PKEY_keygen_init(ctx), "EVP_PKEY_keygen_init")
        if lib.EVP_PKEY_CTX_ctrl_str(ctx, b"paramset", paramset.encode()) <= 0:
            raise ValueError(f"unknown GOST R 34.10-2012 (256) paramset {paramset!r}: {_drain(lib)}")
        pkey = ctypes.c_void_p()
        _check(lib.EVP_PKEY_keygen(ctx, ctypes.byref(pkey)), "EVP_PKEY_keygen")
        pkey = owned(pkey.value, lib.EVP_PKEY_free, "EVP_PKEY_keygen")
        x = owned(lib.X509_new(), lib.X509_free, "X509_new")
        _check(lib.X509_set_version(x, 2), "X509_set_version")
        serial = bytes([secrets.randbelow(127) + 1]) + secrets.token_bytes(19)  # positive, 20 bytes: RFC 5280
        bn = owned(lib.BN_bin2bn(serial, len(serial), None), lib.BN_free, "BN_bin2bn")
        integer = owned(lib.BN_to_ASN1_INTEGER(bn, None), lib.ASN1_INTEGER_free, "BN_to_ASN1_INTEGER")
        _check(lib.X509_set_serialNumber(x, integer), "X509_set_serialNumber")
        _check(lib.X509_gmtime_adj(lib.X509_getm_notBefore(x), -300), "notBefore")  # 5 minutes of clock skew
        _check(lib.X509_gmtime_adj(lib.X509_getm_notAfter(x), days * 86400 - 300), "notAfter")
        name, cn = lib.X509_get_subject_name(x), common_name.encode()
        _check(lib.X509_NAME_add_entry_by_txt(name, b"CN", _MBSTRING_UTF8, cn, len(cn), -1, 0), "CN")
        _check(lib.X509_set_issuer_name(x, name), "X509_set_issuer_name")
        _check(lib.X509_set_pubkey(x, pkey), "X509_set_pubkey")
        for extension, value in ((b"basicConstraints", b"critical,CA:FALSE"),
                                 (b"keyUsage", b"critical,digitalSignature,nonRepudiation")):
            ext = owned(lib.X509V3_EXT_nconf_nid(None, None, lib.OBJ_sn2nid(extension), value),
                        lib.X509_EXTENSION_free, extension.decode())
            _check(lib.X509_add_ext(x, ext, -1), "X509_add_ext")  # adds a copy
        _check(lib.X509_sign(x, pkey, c.md), "X509_sign")
        return (_pem(lambda bio: lib.PEM_write_bio_PrivateKey(bio, pkey, None, None, 0, None, None)),
                _pem(lambda bio: lib.PEM_write_bio_X509(bio, x)))


@contextlib.contextmanager
def _owned(pointer: int | None, free, what: str):
    """Check a pointer libcrypto returned and free it when the block ends."""
    _check(pointer, what)
    try:
        yield pointer
    finally:
        free(pointer)


def _pem(write) -> bytes:
    lib = _crypto().lib
    with _owned(lib.BIO_new(lib.BIO_s_mem()), lib.BIO_free, "BIO_new") as bio:
        _check(write(bio), "PEM_write_bio")
        data = ctypes.c_char_p()
        size = lib.BIO_ctrl(bio, _BIO_GET_MEM_DATA, 0, ctypes.byref(data))
        return ctypes.string_at(data, size)
