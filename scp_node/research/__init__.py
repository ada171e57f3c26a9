"""Tools for developing codecs, off the node's runtime path: the image corpus and its held-out
split, quality metrics, codec trials, learned-codec training, the tiny diffusion pipeline.
Used by `scp-node codec try/train`, bench/ and tests; the node itself never imports them."""
