"""How each tensor is stored in ``model.safetensors``: a registry of codecs keyed by name.

A codec turns one float tensor into one or more stored tensors plus JSON metadata, and back.
``config.json`` records the codec and its metadata per tensor (``"tensors"``); tensors not
listed there are stored dense in their own dtype. The bytes a model takes on disk are the
bytes of these stored tensors.

This layer knows how to store; which codecs exist is registered from above: ``sparse_*`` by
:mod:`slimgen.storage.codecs` itself, ``linear`` and ``codebook`` by :mod:`slimgen.quantize.codecs`
(imported by ``slimgen/__init__.py``, so every ``import slimgen...`` has them).
"""

from slimgen.storage.codecs import CODECS, Encoding, decode_tensor, encode_tensor, register_codec

__all__ = ["CODECS", "Encoding", "decode_tensor", "encode_tensor", "register_codec"]
