"""The token strings behind a text map, so a stored token score can be read next to its word."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _decode_one(tokenizer: Any, token_id: int) -> str:
    if hasattr(tokenizer, "decoder") and hasattr(tokenizer, "byte_decoder"):  # open_clip SimpleTokenizer
        piece = tokenizer.decoder.get(int(token_id), "")
        raw = bytearray(tokenizer.byte_decoder[c] for c in piece if c in tokenizer.byte_decoder)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip() or piece
    inner = getattr(tokenizer, "tokenizer", tokenizer)  # Hugging Face tokenizers
    if hasattr(inner, "convert_ids_to_tokens"):
        return str(inner.convert_ids_to_tokens(int(token_id)))
    return str(int(token_id))


def token_strings(model: Any, texts: Sequence[str], lengths: Sequence[int]) -> list[list[str]]:
    """The first ``lengths[i]`` tokens of each text as strings (the tokens a text map scores: the start
    token, the words' pieces and the end token)."""
    ids = model.tokenize(list(texts)).cpu().tolist()
    return [[_decode_one(model.tokenizer, t) for t in row[:n]] for row, n in zip(ids, lengths)]
