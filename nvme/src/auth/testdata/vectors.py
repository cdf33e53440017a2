#!/usr/bin/env python3
"""DH-HMAC-CHAP known-answer vectors for pollux_nvme::auth, computed the way
Linux drivers/nvme/common/auth.c and drivers/nvme/host/auth.c do, with
Python's hashlib/hmac only (independent of the Rust code under test).

Run: python3 nvme/src/auth/testdata/vectors.py > nvme/src/auth/testdata/vectors.txt
The primes come from the .hex files next to the module (RFC 7919).
"""
import base64, hashlib, hmac, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
H = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}

def secret(hh, key):
    crc = struct.pack('<I', zlib.crc32(key) & 0xffffffff)
    return 'DHHC-1:%02x:%s:' % (hh, base64.b64encode(key + crc).decode())

def transform(hh, key, nqn):
    if hh == 0:
        return key
    return hmac.new(key, nqn.encode() + b'NVMe-over-Fabrics', H[hh]).digest()

def augmented(hid, c, dh):
    if dh is None:
        return c
    return hmac.new(H[hid](dh).digest(), c, H[hid]).digest()

def response(hid, tkey, c, seq, tid, role, nqn1, nqn2, dh):
    m = augmented(hid, c, dh) + struct.pack('<IHB', seq, tid, 0) + role + nqn1.encode() + b'\0' + nqn2.encode()
    return hmac.new(tkey, m, H[hid]).digest()

def prime(bits):
    return int(open(os.path.join(HERE, '..', 'ffdhe', 'ffdhe%d.hex' % bits)).read().strip(), 16)

HOST = 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001'
SUB = 'nqn.2024-11.dev.pollux:auth'
for (hh, hid, bits, klen) in [(0, 1, 0, 32), (1, 1, 2048, 32), (2, 2, 3072, 48), (3, 3, 4096, 64)]:
    key = bytes((i * 7 + hh) & 0xff for i in range(klen))
    ckey = bytes((i * 13 + 1) & 0xff for i in range(klen))
    hl = H[hid]().digest_size
    c1 = bytes((i + 0x40) & 0xff for i in range(hl))
    c2 = bytes((0xff - i) & 0xff for i in range(hl))
    dh = None
    if bits:
        p = prime(bits)
        # Private exponents as pollux_nvme::auth::dh::KeyPair::generate
        # makes them from 64 random bytes: the top bit is forced on.
        x = int.from_bytes(bytes([0x80 | 0x11] + [0x11] * 63), 'big')
        y = int.from_bytes(bytes([0x80 | 0x22] + [0x22] * 63), 'big')
        n = bits // 8
        gx = pow(2, x, p).to_bytes(n, 'big')
        gy = pow(2, y, p).to_bytes(n, 'big')
        dh = pow(int.from_bytes(gy, 'big'), x, p).to_bytes(n, 'big')
        assert dh == pow(int.from_bytes(gx, 'big'), y, p).to_bytes(n, 'big')
    r1 = response(hid, transform(hh, key, HOST), c1, 0x01020304, 0x0506, b'HostHost', HOST, SUB, dh)
    r2 = response(hid, transform(hh, ckey, SUB), c2, 0x0a0b0c0d, 0x0506, b'Controller', SUB, HOST, dh)
    print('vector', hh, hid, bits)
    print('secret', secret(hh, key))
    print('ctrl_secret', secret(hh, ckey))
    if dh is not None:
        print('dh_secret_sha256', hashlib.sha256(dh).hexdigest())
    print('host_response', r1.hex())
    print('ctrl_response', r2.hex())
