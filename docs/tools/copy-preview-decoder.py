#!/usr/bin/env python3
"""Copy the preview decoder (the `preview_decoder.*` tensors and their `loopy.preview_decoder.*`
and `loopy.train.preview_steps` metadata) from one Loopy checkpoint into another:

    copy-preview-decoder.py FROM.safetensors INTO.safetensors OUT.safetensors

Valid only when both share one VAE (the preview decoder was distilled from its decoder), e.g.
INTO was trained with `loopy train --init FROM` by a version that did not keep it yet (since
session 22 `loopy train` keeps it itself). OUT is written atomically. Python standard library."""
import json, os, struct, sys, tempfile


def read(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop('__metadata__', {})
    tensors = {k: (v['dtype'], v['shape'], data[v['data_offsets'][0]:v['data_offsets'][1]])
               for k, v in header.items()}
    return meta, tensors


def is_preview(key):
    return key.startswith('loopy.preview_decoder.') or key == 'loopy.train.preview_steps'


if len(sys.argv) != 4:
    sys.exit(__doc__)
src, dst, out = sys.argv[1:]
src_meta, src_tensors = read(src)
meta, tensors = read(dst)
preview = {k: v for k, v in src_tensors.items() if k.startswith('preview_decoder.')}
if not preview:
    sys.exit(f'{src}: no preview_decoder.* tensors')
if meta.get('loopy.config') != src_meta.get('loopy.config'):
    sys.exit('the two checkpoints have different configs (loopy.config)')
tensors = {k: v for k, v in tensors.items() if not k.startswith('preview_decoder.')}
tensors.update(preview)
meta = {k: v for k, v in meta.items() if not is_preview(k)}
meta.update({k: v for k, v in src_meta.items() if is_preview(k)})
header, blobs, offset = {'__metadata__': meta}, [], 0
for k in sorted(tensors):
    dtype, shape, blob = tensors[k]
    header[k] = {'dtype': dtype, 'shape': shape, 'data_offsets': [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
text = json.dumps(header, separators=(',', ':')).encode()
text += b' ' * (-len(text) % 8)  # keep the tensor data 8-byte aligned
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), suffix='.tmp')
with os.fdopen(fd, 'wb') as f:
    f.write(struct.pack('<Q', len(text)) + text + b''.join(blobs))
os.chmod(tmp, os.stat(dst).st_mode & 0o7777)
os.replace(tmp, out)
