#!/usr/bin/env python3
"""Regenerates src/openapi/upstream_1_33.json: what upstream's Kubernetes 1.33 OpenAPI adds to
the k8s-openapi schemars schemas (x-kubernetes-* extensions on definitions, properties and list
items; upstream's `required` lists), for GA definitions.

The source is upstream's published definitions as shipped in the PyPI package
`kubernetes-validate` (kubernetes-json-schema/v1.33.0-local/_definitions.json):

    pip download --no-deps kubernetes-validate -d /tmp/kv && cd /tmp/kv && unzip -q *.whl
    python3 tools/extract_openapi_ext.py /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.33.0-local/_definitions.json
"""
import json
import re
import sys
from pathlib import Path


def exts(d):
    return {k: v for k, v in sorted(d.items())
            if k.startswith('x-kubernetes-') and k != 'x-kubernetes-group-version-kind'}


def main(src):
    defs = json.load(open(src))['$defs']
    out = {}
    for name, d in sorted(defs.items()):
        if re.search(r'\.v\d+(alpha|beta)\d*\.', name):
            continue
        e = {}
        if exts(d):
            e['x'] = exts(d)
        if d.get('required'):
            e['r'] = d['required']
        props = {}
        for p, pd in sorted(d.get('properties', {}).items()):
            pe = exts(pd)
            if isinstance(pd.get('items'), dict) and exts(pd['items']):
                pe['items'] = exts(pd['items'])
            if pe:
                props[p] = pe
        if props:
            e['p'] = props
        out[name] = e
    dest = Path(__file__).resolve().parent.parent / 'src' / 'openapi' / 'upstream_1_33.json'
    dest.write_text(json.dumps(out, separators=(',', ':'), sort_keys=True))
    print(f'{dest}: {len(out)} definitions')


if __name__ == '__main__':
    main(sys.argv[1])
