"""The file: the .nsk container (`container`), entropy coding of integer streams (`entropy`), and
the per-tensor codecs (`codecs`) that turn a tensor into bytes and back."""
