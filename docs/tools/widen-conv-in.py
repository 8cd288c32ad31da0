#!/usr/bin/env python3
"""Widen a trained Loopy checkpoint to "reference_latent_input": true (docs/training.md).

Usage: widen-conv-in.py IN.safetensors OUT.safetensors

The denoising U-Net's conv_in gets as many extra input channels as it had (for the reference
latent), their weights zero, so the network computes what it did before; train stage 1 on.
Float32 checkpoints only; Python standard library only."""
import json, struct, sys
if len(sys.argv) != 3:
    sys.exit(__doc__)
src, dst = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
meta = h.pop('__metadata__')
cfg = json.loads(meta['loopy.config']); cfg['reference_latent_input'] = True
meta['loopy.config'] = json.dumps(cfg, separators=(',', ':'))
key = 'denoising_unet.conv_in.weight'
out_h, blobs, off = {}, [], 0
for k in sorted(h, key=lambda k: h[k]['data_offsets'][0]):
    v = h[k]; raw = data[v['data_offsets'][0]:v['data_offsets'][1]]
    if k == key:
        assert v['dtype'] == 'F32', v['dtype']
        o, i, kh, kw = v['shape']; per = i * kh * kw * 4
        raw = b''.join(raw[c * per:(c + 1) * per] + bytes(per) for c in range(o))
        v = dict(v, shape=[o, 2 * i, kh, kw])
    out_h[k] = {'dtype': v['dtype'], 'shape': v['shape'], 'data_offsets': [off, off + len(raw)]}
    blobs.append(raw); off += len(raw)
out_h['__metadata__'] = meta
hb = json.dumps(out_h, separators=(',', ':')).encode(); hb += b' ' * ((8 - len(hb) % 8) % 8)
open(dst, 'wb').write(struct.pack('<Q', len(hb)) + hb + b''.join(blobs))
print('widened', key, 'in', src, '->', dst)
