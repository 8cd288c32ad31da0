#!/usr/bin/env python3
"""Set one metadata entry of a .safetensors file in place, e.g. the guidance ratios a Loopy
checkpoint recommends (docs/checkpoint-format.md):

    set-metadata.py MODEL.safetensors loopy.guidance '{"audio": 12, "reference": 3}'

Only the header changes; the tensor bytes are copied unchanged. The file is replaced atomically
(a temporary file beside it, then a rename). Python standard library only."""
import json, os, struct, sys, tempfile
if len(sys.argv) != 4:
    sys.exit(__doc__)
path, key, value = sys.argv[1:]
with open(path, 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
header.setdefault('__metadata__', {})[key] = value
text = json.dumps(header, separators=(',', ':')).encode()
text += b' ' * (-len(text) % 8)  # keep the tensor data 8-byte aligned
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix='.tmp')
with os.fdopen(fd, 'wb') as f:
    f.write(struct.pack('<Q', len(text)) + text + data)
os.chmod(tmp, os.stat(path).st_mode & 0o7777)
os.replace(tmp, path)
